"""The shapes world's layout editor: edit instructions carried out on an image's detected objects.

In the spirit of layout-editing methods such as SLD (Wu et al., CVPR 2024: detect the objects,
then move, add, remove or recolour them as latent operations), but in this world's pixels: the
exact detector finds each object's box, an object's coverage (how much of each pixel is its
colour, against the image's own background) is its mask, and every operation moves, paints or
erases coverage. What the model drew stays the model's drawing (a moved object keeps its
pixels); only an added object is drawn new, with the renderer's anti-aliased masks.

Instructions it understands (case and a final '.' do not matter; 'the' is optional where shown):

    add      "Add a red circle", "Add two blue squares", "Add one more blue square"
    count    "Draw exactly two blue squares"                 (adds or removes to that number)
    remove   "Remove every green triangle", "Remove one green triangle"
    relation "Put red circle left of blue square"  (also Move/Place, 'to the left of', 'the')
    side     "Move the red circle to the left"     (left, right, top, bottom half of the image)
    recolour "Make the green circle red", "Make every green circle red"
    redraw   "Redraw the red circle cleanly"

Anything else is an unparsed instruction: recorded as a failed edit, never guessed. After all
instructions ran, the detector checks each one's promise on the edited image (`done`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from atelier.tools.detection import OPPOSITE, Detection, relation_holds
from atelier.worlds.shapes.detect import detect_all
from atelier.worlds.shapes.render import PALETTE, _mask
from atelier.worlds.shapes.scene import COLOURS, SHAPES, CaptionError, parse

KINDS = ("add", "count", "remove", "relation", "side", "recolour", "redraw")
_SUPERSAMPLE = 4
_GAP = 1.5  # pixels between boxes, as the renderer keeps them
_TRIES = 400

_NAME = rf"(?:{'|'.join(COLOURS)}) (?:{'|'.join(SHAPES)})s?"
_COUNTS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "another": 1, "one more": 1, "a second": 1,
           "a third": 1, "one extra": 1}
_COUNT = "|".join(sorted(map(re.escape, _COUNTS), key=len, reverse=True))
_REL = r"left of|right of|above|below"
_PATTERNS = (
    ("add", re.compile(rf"^add (?P<count>{_COUNT}) (?P<a>{_NAME})$")),
    ("count", re.compile(rf"^draw exactly (?P<count>a|an|one|two|three) (?P<a>{_NAME})$")),
    ("remove", re.compile(rf"^remove (?P<which>every|all|one|the extra|an extra|the|a) (?P<a>{_NAME})$")),
    ("relation", re.compile(rf"^(?:put|move|place) (?:the )?(?P<a>{_NAME}) (?:to the )?(?P<rel>{_REL}) (?:the )?(?P<b>{_NAME})$")),
    ("side", re.compile(rf"^move (?:the |every )?(?P<a>{_NAME}) to the (?P<side>left|right|top|bottom)$")),
    ("recolour", re.compile(rf"^(?:make|recolou?r|colou?r|turn|paint) (?P<which>the|every|all) (?P<a>{_NAME}) "
                            rf"(?P<colour>{'|'.join(COLOURS)})$")),
    ("redraw", re.compile(rf"^redraw (?:the |every )?(?P<a>{_NAME})(?: cleanly)?$")),
)


class UnparsedInstruction(ValueError):
    """An instruction outside the layout editor's grammar."""


@dataclass(frozen=True)
class Op:
    """One parsed instruction."""

    kind: str  # one of KINDS
    name: str  # the object it acts on, e.g. 'red circle'
    count: int | None = None  # add: how many; count: the number wanted
    every: bool = True  # remove / recolour: every such object, or one
    relation: str | None = None
    other: str | None = None  # the relation's second object
    side: str | None = None
    colour: str | None = None  # recolour: the new colour


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") else name


def parse_instruction(text: str) -> Op:
    """The operation an instruction asks for; UnparsedInstruction naming the grammar otherwise."""
    norm = " ".join(text.lower().strip().rstrip(".!").replace(",", " ").split())
    for kind, pattern in _PATTERNS:
        if (m := pattern.match(norm)) is None:
            continue
        g = m.groupdict()
        name = _singular(g["a"])
        match kind:
            case "add" | "count":
                return Op(kind, name, count=_COUNTS[g["count"]])
            case "remove":
                return Op(kind, name, every=g["which"] in ("every", "all"))
            case "relation":
                return Op(kind, name, relation=g["rel"], other=_singular(g["b"]))
            case "side":
                return Op(kind, name, side=g["side"])
            case "recolour":
                return Op(kind, name, every=g["which"] != "the", colour=g["colour"])
            case "redraw":
                return Op(kind, name)
    raise UnparsedInstruction(f"the layout editor cannot read {text!r}: it knows add / draw exactly / remove / "
                              "put X left of|right of|above|below Y / move X to the left|right|top|bottom / "
                              "make X <colour> / redraw X")


@dataclass
class _Object:
    """An object on the canvas: its name, box, and its coverage (alpha) on the box's window."""

    name: str
    box: tuple[float, float, float, float]
    window: tuple[int, int, int, int]  # x0, y0, x1, y1 integer pixel window holding its coverage
    alpha: np.ndarray  # (h, w) in [0, 1]
    colour: np.ndarray  # (3,) the colour it is drawn in, 0..255

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2

    @property
    def side(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


@dataclass
class InstructionOutcome:
    """What became of one instruction: its kind ('unparsed' when not understood), whether it was
    carried out (`applied`) and whether the detector confirms it on the edited image (`done`)."""

    instruction: str
    kind: str
    applied: bool
    done: bool
    reason: str = ""


@dataclass
class LayoutEdit:
    """The edited image and what became of each instruction."""

    image: Image.Image = field(repr=False)
    outcomes: list[InstructionOutcome]
    seed: int
    method: str = "layout"

    @property
    def ok(self) -> bool:
        """Every instruction understood, carried out and confirmed, and there was at least one."""
        return bool(self.outcomes) and all(o.done for o in self.outcomes)

    def record(self) -> dict:
        return {"method": self.method, "seed": self.seed, "ok": self.ok, "outcomes": [asdict(o) for o in self.outcomes]}


class Canvas:
    """An image as a background plus objects that can be moved, added, erased and recoloured."""

    def __init__(self, image: Image.Image, detections: list[Detection], rng: np.random.Generator):
        self.pixels = np.asarray(image.convert("RGB"), np.float32).copy()
        self.size = self.pixels.shape[0]
        self.rng = rng
        border = np.concatenate([self.pixels[0], self.pixels[-1], self.pixels[1:-1, 0], self.pixels[1:-1, -1]])
        self.background = np.median(border, axis=0)
        self.objects = [self._lift(d) for d in detections]

    # --- reading objects off the pixels --------------------------------------------------------

    def _window(self, box) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = box
        clip = lambda v: int(min(max(v, 0), self.size))  # noqa: E731
        return clip(np.floor(x0) - 1), clip(np.floor(y0) - 1), clip(np.ceil(x1) + 1), clip(np.ceil(y1) + 1)

    def _coverage(self, window, colour: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = window
        direction = colour - self.background
        offset = self.pixels[y0:y1, x0:x1] - self.background
        return np.clip(offset @ direction / max(float(direction @ direction), 1e-6), 0.0, 1.0)

    def _lift(self, d: Detection) -> _Object:
        colour_name = d.label.split()[0]
        window = self._window(d.box)
        alpha = self._coverage(window, np.array(PALETTE[colour_name], np.float32))
        x0, y0, x1, y1 = window
        solid = alpha > 0.8
        drawn = self.pixels[y0:y1, x0:x1][solid].mean(axis=0) if solid.any() else np.array(PALETTE[colour_name], np.float32)
        return _Object(d.label, tuple(d.box), window, alpha, drawn)

    def named(self, name: str) -> list[_Object]:
        return [o for o in self.objects if o.name == name]

    # --- painting ------------------------------------------------------------------------------

    def _paint(self, o: _Object, sign: float) -> None:
        x0, y0, x1, y1 = o.window
        a = o.alpha[..., None]
        region = self.pixels[y0:y1, x0:x1]
        if sign > 0:
            self.pixels[y0:y1, x0:x1] = region * (1 - a) + o.colour * a
        else:
            # Background over the object: fully where it covers a tenth of a pixel or more, in part on its
            # soft rim. Subtracting its colour instead left a faint ghost where the model's colour
            # drifts from the palette (seen in the first efficacy run's edits).
            m = np.clip(a / 0.1, 0.0, 1.0)
            self.pixels[y0:y1, x0:x1] = region * (1 - m) + self.background * m

    def erase(self, o: _Object) -> None:
        self._paint(o, -1.0)
        self.objects.remove(o)

    def place(self, o: _Object, box: tuple[float, float, float, float]) -> None:
        """`o` moved so that its box is `box` (same size), keeping its drawn coverage."""
        dx, dy = round(box[0] - o.box[0]), round(box[1] - o.box[1])
        x0, y0, x1, y1 = o.window
        window = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
        alpha = o.alpha
        # Cut what would fall off the canvas (boxes are kept inside it, windows may reach one pixel past).
        cx0, cy0 = max(0, -window[0]), max(0, -window[1])
        cx1 = alpha.shape[1] - max(0, window[2] - self.size)
        cy1 = alpha.shape[0] - max(0, window[3] - self.size)
        window = (window[0] + cx0, window[1] + cy0, window[0] + cx1, window[1] + cy1)
        moved = _Object(o.name, (o.box[0] + dx, o.box[1] + dy, o.box[2] + dx, o.box[3] + dy), window,
                        alpha[cy0:cy1, cx0:cx1], o.colour)
        self._paint(moved, 1.0)
        self.objects.append(moved)

    def draw_new(self, name: str, box: tuple[float, float, float, float]) -> None:
        colour, shape = name.split()
        grid = self.size * _SUPERSAMPLE
        alpha = _mask(shape, box, grid, _SUPERSAMPLE).astype(np.float32)
        alpha = alpha.reshape(self.size, _SUPERSAMPLE, self.size, _SUPERSAMPLE).mean(axis=(1, 3))
        window = self._window(box)
        x0, y0, x1, y1 = window
        o = _Object(name, box, window, alpha[y0:y1, x0:x1], np.array(PALETTE[colour], np.float32))
        self._paint(o, 1.0)
        self.objects.append(o)

    def recolour(self, o: _Object, colour: str) -> None:
        self.erase(o)
        new = _Object(f"{colour} {o.name.split()[1]}", o.box, o.window, o.alpha, np.array(PALETTE[colour], np.float32))
        self._paint(new, 1.0)
        self.objects.append(new)

    def redraw(self, o: _Object) -> None:
        """The object drawn anew, cleanly, on a square box of its size at its centre."""
        self.erase(o)
        cx, cy = o.centre
        half = min(o.side / 2, cx - 1, cy - 1, self.size - 1 - cx, self.size - 1 - cy)
        self.draw_new(o.name, (cx - half, cy - half, cx + half, cy + half))

    # --- where things go -------------------------------------------------------------------------

    def typical_side(self) -> float:
        sides = [o.side for o in self.objects]
        return float(np.median(sides)) if sides else self.size * 0.3

    def free_box(self, side: float, ok=lambda cx, cy: True, ignore=()) -> tuple[float, float, float, float] | None:
        """A random box of `side` inside the canvas, apart from every object (but `ignore`), whose
        centre satisfies `ok`; None when none is found."""
        others = [o.box for o in self.objects if o not in ignore]
        for _ in range(_TRIES):
            x0 = self.rng.uniform(1, self.size - 1 - side)
            y0 = self.rng.uniform(1, self.size - 1 - side)
            box = (x0, y0, x0 + side, y0 + side)
            if ok(x0 + side / 2, y0 + side / 2) and all(_apart(box, b) for b in others):
                return box
        return None

    def image(self) -> Image.Image:
        return Image.fromarray(np.clip(self.pixels + 0.5, 0, 255).astype(np.uint8))


def _apart(a, b) -> bool:
    return a[2] + _GAP <= b[0] or b[2] + _GAP <= a[0] or a[3] + _GAP <= b[1] or b[3] + _GAP <= a[1]


def _beyond(relation: str, anchors: list[tuple[float, float]], margin: float = 1.0):
    """A test on a centre: strictly on `relation`'s side of every anchor centre."""
    match relation:
        case "left of":
            return lambda cx, cy: all(cx < ax - margin for ax, _ in anchors)
        case "right of":
            return lambda cx, cy: all(cx > ax + margin for ax, _ in anchors)
        case "above":
            return lambda cx, cy: all(cy < ay - margin for _, ay in anchors)
        case "below":
            return lambda cx, cy: all(cy > ay + margin for _, ay in anchors)
    raise ValueError(relation)


def _half(side: str, size: int):
    mid = size / 2
    return {"left": lambda cx, cy: cx < mid - 1, "right": lambda cx, cy: cx > mid + 1,
            "top": lambda cx, cy: cy < mid - 1, "bottom": lambda cx, cy: cy > mid + 1}[side]


def _split_sides(relation: str, size: int):
    """Centre tests for the first and the second object when both move: either side of the middle."""
    first = {"left of": "left", "right of": "right", "above": "top", "below": "bottom"}[relation]
    second = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[first]
    return _half(first, size), _half(second, size)


def _move_all(canvas: Canvas, movers: list[_Object], ok, anchors: list[_Object] = (), relation: str | None = None,
              attempts: int = 5) -> bool:
    """Move every object of `movers` to free spots whose centres pass `ok`; with `relation`, the
    `anchors` are moved first (centres passing `ok`) and the movers then land on `relation`'s
    side of them. All or nothing: a failed try leaves the canvas as it was."""
    saved_pixels, saved_objects = canvas.pixels.copy(), list(canvas.objects)
    for _ in range(attempts):
        lifted = [*anchors, *movers]
        for o in lifted:  # lift everything that moves first, so nothing is painted over a leaving object
            canvas.erase(o)
        placed_anchors, failed = [], False
        for o in lifted:
            test = ok if o in anchors or relation is None else _beyond(relation, [a.centre for a in placed_anchors])
            box = canvas.free_box(o.side, test)
            if box is None:
                failed = True
                break
            canvas.place(o, box)
            if o in anchors:
                placed_anchors.append(canvas.objects[-1])
        if not failed:
            return True
        canvas.pixels, canvas.objects = saved_pixels.copy(), list(saved_objects)
    return False


def _asked_side(canvas: Canvas, name: str, prompt: str | None):
    """A centre test putting a new `name` on the side the prompt's relation asks (any centre
    without a relation, or for an object the relation does not name)."""
    try:
        scene = parse(prompt) if prompt else None
    except CaptionError:
        scene = None
    if scene is None or scene.relation is None:
        return lambda cx, cy: True
    first, second = scene.groups[0].name, scene.groups[1].name
    if name == first:
        return _beyond(scene.relation, [o.centre for o in canvas.named(second)])
    if name == second:
        return _beyond(OPPOSITE[scene.relation], [o.centre for o in canvas.named(first)])
    return lambda cx, cy: True


def _apply(canvas: Canvas, op: Op, prompt: str | None = None) -> str:
    """Carry out one operation; '' when done, else why not."""
    found = canvas.named(op.name)
    match op.kind:
        case "add" | "count":
            want = len(found) + op.count if op.kind == "add" else op.count
            while len(canvas.named(op.name)) > want:  # count: the least certain extras go first
                canvas.erase(canvas.named(op.name)[-1])
            for _ in range(want - len(canvas.named(op.name))):
                # Where the prompt relates the object to another, it is added on the asked side if there is room.
                box = canvas.free_box(canvas.typical_side(), _asked_side(canvas, op.name, prompt)) or \
                    canvas.free_box(canvas.typical_side())
                if box is None:
                    return "no free room for another object"
                canvas.draw_new(op.name, box)
            return ""
        case "remove":
            if not found:
                return f"there is no {op.name} to remove"
            for o in found if op.every else found[-1:]:
                canvas.erase(o)
            return ""
        case "recolour":
            if not found:
                return f"there is no {op.name} to recolour"
            for o in found if op.every else found[:1]:
                canvas.recolour(o, op.colour)
            return ""
        case "redraw":
            if not found:
                return f"there is no {op.name} to redraw"
            for o in found:
                canvas.redraw(o)
            return ""
        case "side":
            if not found:
                return f"there is no {op.name} to move"
            return "" if _move_all(canvas, found, _half(op.side, canvas.size)) else "no free room on that side"
        case "relation":
            firsts, seconds = found, canvas.named(op.other)
            if not firsts or not seconds:
                return f"there is no {op.name if not firsts else op.other} to place"
            # Move the first objects beyond the second ones; if there is no room, move both apart.
            if _move_all(canvas, firsts, _beyond(op.relation, [o.centre for o in seconds])):
                return ""
            second_ok = _split_sides(op.relation, canvas.size)[1]
            if _move_all(canvas, canvas.named(op.name), second_ok, anchors=canvas.named(op.other), relation=op.relation):
                return ""
            return "no layout found that satisfies the relation"
    raise ValueError(op.kind)


def confirmed(op: Op, before: list[Detection], after: list[Detection], size: int) -> bool:
    """Whether the detector sees on the edited image what the instruction promised."""
    n_before = sum(d.label == op.name for d in before)
    now = [d for d in after if d.label == op.name]
    match op.kind:
        case "add":
            return len(now) == n_before + op.count
        case "count":
            return len(now) == op.count
        case "remove":
            return len(now) == (0 if op.every else max(n_before - 1, 0))
        case "recolour":
            new = f"{op.colour} {op.name.split()[1]}"
            moved = n_before if op.every else min(n_before, 1)
            return moved > 0 and len(now) == n_before - moved and (
                sum(d.label == new for d in after) == sum(d.label == new for d in before) + moved)
        case "redraw":
            return len(now) == n_before and all(d.score >= 0.5 for d in now)
        case "side":
            test = _half(op.side, size)
            return bool(now) and all(test(*d.centre) for d in now)
        case "relation":
            return relation_holds(op.relation, now, [d for d in after if d.label == op.other])
    raise ValueError(op.kind)


def layout_edit(image: Image.Image, instructions: list[str], seed: int, prompt: str | None = None) -> LayoutEdit:
    """`image` with `instructions` carried out in order on its detected objects (positions drawn
    from `seed`: the same inputs give the same pixels). `prompt`, the image's caption, places an
    added object on the side its relation asks. Unparsed instructions are skipped and
    recorded; removals run first (they free room), the rest in order; each instruction's
    `done` is the detector's check of it on the final image."""
    before = detect_all(image.convert("RGB"))
    # The surest detections first: an operation on 'the extra one' takes the least certain.
    canvas = Canvas(image, sorted(before, key=lambda d: -d.score), np.random.default_rng(seed))
    parsed: list[tuple[str, Op | None, str]] = []
    for text in instructions:
        try:
            parsed.append((text, parse_instruction(text), ""))
        except UnparsedInstruction as e:
            parsed.append((text, None, str(e)))
    # Removals first, whatever the order given: they free the room an addition or a move needs.
    order = sorted(range(len(parsed)), key=lambda i: parsed[i][1] is None or parsed[i][1].kind != "remove")
    for i in order:
        text, op, why = parsed[i]
        if op is not None:
            parsed[i] = (text, op, _apply(canvas, op, prompt))
    edited = canvas.image()
    after = detect_all(edited)
    outcomes = []
    for text, op, why in parsed:
        if op is None:
            outcomes.append(InstructionOutcome(text, "unparsed", False, False, why))
        else:
            done = not why and confirmed(op, before, after, canvas.size)
            outcomes.append(InstructionOutcome(text, op.kind, not why, done,
                                               why or ("" if done else "the detector does not confirm it")))
    return LayoutEdit(edited, outcomes, seed)
