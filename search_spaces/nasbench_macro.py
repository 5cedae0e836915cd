"""NAS-Bench-Macro (Su et al., CVPR 2021): an 8-layer single-path space written in the block grammar.

The benchmark trained every network of this space alone on CIFAR-10 (three seeds, 50 epochs), so a
search over it is judged by a look-up (`nas.groundtruth`). Its network, from the benchmark's README:

- stem: 3x3 conv, 32 channels, stride 1, BN, ReLU (32x32 input);
- 8 searchable layers in stages of 2, 3 and 3; each stage's first layer has stride 2 and doubles the
  channels (64, 128, 256); a layer is the identity (`skip`; at a stage's first layer a 1x1 conv with
  stride 2 + BN, the grammar's `proj`), MBConv k3 e3, or MBConv k5 e6 (1x1 expand, BN, ReLU; kxk
  depthwise, BN, ReLU; 1x1 project, BN; residual where the shape is unchanged; no SE);
- head: 1x1 conv to 1280, BN, ReLU, global average pool, linear to 10 classes; convs have no bias.

A network is an 8-character code, one digit per layer: `0` identity, `1` k3 e3, `2` k5 e6. Within a
stage an identity at a later position is a no-op, so codes that differ only in where a stage's later
identities sit are one network; `canonical` moves them to the stage's end, as the publishers did
(3^8 = 6,561 codes, 3,969 distinct networks).
"""

from __future__ import annotations

import itertools
from typing import Iterable, Sequence

from spnas_core.errors import ArchSpecError

from .arch import ArchSpec
from .choices import SKIP
from .counts import params_and_macs  # noqa: F401 - the benchmark's params and flops, counted from shapes
from .space import SearchSpace, Stage

DIGITS = {"0": SKIP, "1": "k3_e3", "2": "k5_e6"}
CHOICE_DIGIT = {v: k for k, v in DIGITS.items()}
RESOLUTION = 32
NUM_CLASSES = 10

NASBENCH_MACRO_SPACE = SearchSpace(
    name="nasbench_macro",
    stem="conv_k3_c32_s1",
    fixed=(),
    stages=(Stage(64, 2, 2), Stage(128, 3, 2), Stage(256, 3, 2)),
    head=("conv_k1_c1280_s1", "pool"),
    choices=("k3_e3", "k5_e6"),
    allow_skip=True,
    first_skip="projection",
)


def _stage_spans(space: SearchSpace = NASBENCH_MACRO_SPACE) -> list[tuple[int, int]]:
    spans, start = [], 0
    for st in space.stages:
        spans.append((start, start + st.repeats))
        start += st.repeats
    return spans


def check_code(code: str) -> str:
    """The code itself, or an error saying what a code is."""
    if not isinstance(code, str) or len(code) != NASBENCH_MACRO_SPACE.num_layers or any(c not in DIGITS for c in code):
        raise ArchSpecError(f"'{code}' is not a NAS-Bench-Macro code: 8 digits, one per layer, 0 (identity), "
                            f"1 (k3 e3) or 2 (k5 e6), e.g. 21210200")
    return code


def choices_of(code: str) -> list[str]:
    """'21210200' -> ['k5_e6', 'k3_e3', ...] (the space's layer choices)."""
    return [DIGITS[c] for c in check_code(code)]


def code_of(choices: Sequence[str]) -> str:
    """Inverse of `choices_of`."""
    try:
        return "".join(CHOICE_DIGIT[c] for c in choices)
    except KeyError as e:
        raise ArchSpecError(f"choice {e} is not one of NAS-Bench-Macro's (skip, k3_e3, k5_e6)") from None


def arch_of(code: str, resolution: int = RESOLUTION, num_classes: int = NUM_CLASSES) -> ArchSpec:
    """The network a code denotes, in the grammar (named `nbm-<code>`)."""
    return NASBENCH_MACRO_SPACE.decode(choices_of(code), resolution, 1.0, num_classes, name=f"nbm-{code}")


def code_of_arch(arch: ArchSpec) -> str:
    """The code of a network of the space (an error if it is not one)."""
    return code_of(NASBENCH_MACRO_SPACE.encode(arch))


def canonical(code: str) -> str:
    """The one code of a network: within each stage, the later positions' identities moved to its end."""
    out = list(check_code(code))
    for a, b in _stage_spans():
        rest = [c for c in code[a + 1:b] if c != "0"]
        out[a + 1:b] = rest + ["0"] * (b - a - 1 - len(rest))
    return "".join(out)


def all_codes() -> list[str]:
    """Every code, in lexicographic order (6,561)."""
    return ["".join(p) for p in itertools.product("012", repeat=NASBENCH_MACRO_SPACE.num_layers)]


def distinct_codes(codes: Iterable[str] | None = None) -> list[str]:
    """The canonical codes (one per network), sorted (3,969 for the whole space)."""
    return sorted({canonical(c) for c in (all_codes() if codes is None else codes)})


def depth(code: str) -> int:
    """Non-identity layers of a network (the benchmark's strongest one-number predictor, tau 0.68)."""
    return sum(c != "0" for c in check_code(code))
