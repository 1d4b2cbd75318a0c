"""Build hook only (the project's metadata is in pyproject.toml): wheels carry examples/*.yaml
as atelier/_examples, so `atelier run shapes` and `atelier init` work after `pip install`."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithExamples(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "atelier" / "_examples"
        self.mkpath(str(target))
        for config in sorted((Path(__file__).parent / "examples").glob("*.yaml")):
            self.copy_file(str(config), str(target / config.name))


setup(cmdclass={"build_py": BuildWithExamples})
