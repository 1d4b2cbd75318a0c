"""Prompt templates: one text file per role and mode in atelier/prompts/.

A file has a `## system` section and a `## user` section; `$name` placeholders in either are
filled from the request (string.Template, so JSON braces in the text need no escaping).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from string import Template


class TemplateError(ValueError):
    """A template that is missing, malformed, or refers to a value the request lacks."""


@cache
def load_template(name: str) -> dict[str, str]:
    """The sections ('system', 'user') of atelier/prompts/<name>.txt."""
    try:
        text = resources.files("atelier").joinpath("prompts", f"{name}.txt").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateError(f"no prompt template atelier/prompts/{name}.txt") from None
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.strip().lower() in ("## system", "## user"):
            current = line.strip().lower()[3:]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    if "user" not in sections:
        raise TemplateError(f"atelier/prompts/{name}.txt needs a '## user' section")
    return {k: "\n".join(v).strip() for k, v in sections.items()}


def reask_text(error: str) -> str:
    """What the model is told after an answer that did not validate."""
    return Template(load_template("reask")["user"]).safe_substitute(error=error)


def render(name: str, values: dict[str, str]) -> tuple[str, str]:
    """(system, user) messages of a role's template with its placeholders filled."""
    sections = load_template(name)
    if "system" not in sections:
        raise TemplateError(f"atelier/prompts/{name}.txt needs a '## system' section")
    try:
        return Template(sections["system"]).substitute(values), Template(sections["user"]).substitute(values)
    except KeyError as e:
        raise TemplateError(f"atelier/prompts/{name}.txt uses ${e.args[0]}, which the request does not give") from None
