"""benchmark_model's output, every era of it (TF 1.x to today, CRLF from old Android shells, log
prefixes), reduced to the timed run's `Timing`; failures after timings are refused, not read."""

from __future__ import annotations

import re

from spnas_core.errors import BenchmarkOutputError, ModelRefusedError

from .base import OpEntry, Timing

_NUM = r"([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
_NEW = re.compile(r"Inference timings in us:.*?Inference \(avg\):\s*" + _NUM)
_OLD = re.compile(r"Average inference timings in us:.*?Inference:\s*" + _NUM)
_OLD_NO_STATS = re.compile(r"Average inference timings in us:.*?no stats:\s*" + _NUM + "?", re.S)
_STATS = re.compile(r"count=(\d+)\s.*?avg=" + _NUM + r"\s+std=" + _NUM)
_TIMINGS = re.compile(r"Timings \(microseconds\):\s*count=(\d+)\s.*?avg=" + _NUM + r"\s+std=" + _NUM)
_RUNNING = re.compile(r"Running benchmark for at least")
# Lines benchmark_model prints when it could not run the model; after them any timing lines are void.
_REFUSED = re.compile(r"Didn't find op for builtin opcode|Failed to construct interpreter|Failed to allocate tensors|"
                      r"Failed to invoke|Failed to apply .* delegate|Unsupported (?:data type|op)|"
                      r"Could not open '.*'|Failed to mmap model|is not a valid flatbuffer|"
                      r"Encountered unresolved custom op|Node number \d+ .* failed to (?:prepare|invoke)", re.I)
_FAILED = re.compile(r"Benchmarking failed|^ERROR:|Aborted|Segmentation fault|Fatal signal", re.I | re.M)


def normalise_output(text: str) -> str:
    """adb shells of old Android turn newlines into CRLF and some binaries prefix log lines (`INFO: `)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"^(?:INFO|I\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\]):?\s*", "", text, flags=re.M)


def parse_benchmark_output(text: str) -> Timing:
    """The timed-run latency from any era of benchmark_model's output (stdout and stderr together).

    1. ``Inference timings in us: Init: …, First inference: …, Warmup (avg): …, Inference (avg): …``
    2. ``Average inference timings in us: Warmup: …, Init: …, Inference: …`` (TF 1.x)
    3. ``Average inference timings in us: Warmup: …, Init: …, no stats: …`` (TF 1.x without a summary
       line): the figure after ``no stats:`` when a ``count=… avg=… std=…`` line carries it, else the
       stats line of the last ``Running benchmark for …`` block (the timed run; the warm-up comes first)
    4. ``Timings (microseconds): count=… first=… curr=… min=… max=… avg=… std=…``

    A run that printed timings and then failed (``Benchmarking failed.``, an interpreter error) is
    refused: `ModelRefusedError` when the binary could not run this model, `BenchmarkOutputError`
    otherwise.
    """
    text = normalise_output(text)
    refused = _REFUSED.search(text)
    if refused:
        raise ModelRefusedError(f"benchmark_model refused the model: {line_at(text, refused.start())}")
    failed = _FAILED.search(text)
    if failed:
        raise BenchmarkOutputError(f"benchmark_model failed: {line_at(text, failed.start())}; last lines:\n"
                                   f"{output_tail(text)}")
    stats = [(int(c), float(a), float(sd)) for c, a, sd in _STATS.findall(text)]

    def with_stats(avg_us: float) -> Timing:
        for c, a, sd in reversed(stats):
            if abs(a - avg_us) <= max(1e-6, 0.01 * avg_us):
                return Timing(avg_us / 1e3, sd / 1e3, c)
        return Timing(avg_us / 1e3, 0.0, 1)

    m = _NEW.search(text)
    if m:
        return with_stats(float(m.group(1)))
    m = _OLD.search(text)
    if m:
        return with_stats(float(m.group(1)))
    m = _OLD_NO_STATS.search(text)
    if m:
        # The figure after "no stats:" is the timed run's average in some TF 1.x builds (a count in others):
        # trusted only when a stats line carries it. Otherwise the timed run is the last "Running benchmark"
        # block (a warm-up with several runs prints a full stats line of its own first).
        if m.group(1) and any(abs(a - float(m.group(1))) <= 0.01 * a for _, a, _ in stats):
            return with_stats(float(m.group(1)))
        runs = list(_RUNNING.finditer(text))
        timed = _STATS.findall(text[runs[-1].end():]) if runs else []
        if timed:
            c, a, sd = timed[0]
            return Timing(float(a) / 1e3, float(sd) / 1e3, int(c))
    timings = _TIMINGS.findall(text)
    if timings:
        c, a, sd = timings[0]  # the first is the whole-model summary; per-node summaries follow
        return Timing(float(a) / 1e3, float(sd) / 1e3, int(c))
    raise BenchmarkOutputError(f"no latency in benchmark_model output; last lines:\n{output_tail(text)}")


def line_at(text: str, pos: int) -> str:
    """The whole line of `text` that holds position `pos`, stripped (for error messages)."""
    return text[text.rfind("\n", 0, pos) + 1:].split("\n", 1)[0].strip()


def output_tail(text: str) -> str:
    """The last lines of a command's output, for an error message."""
    return "\n".join(text.strip().splitlines()[-5:]) or "(no output)"


# ---------------------------------------------------------------------------------- per-op profiles
# One row of TFLite's profile summarizer (benchmark_model --enable_op_profiling=true, and the LiteRT
# profiler's summary): node type (may hold spaces), start, first, avg ms, %, cdf%, mem KB, times called, name.
_OP_ROW = re.compile(r"^\s*(?P<type>\S.*?)\s+(?P<start>[\d.]+)\s+(?P<first>[\d.]+)\s+(?P<avg>[\d.]+)\s+"
                     r"(?P<pct>[\d.]+)%\s+(?P<cdf>[\d.]+)%\s+(?P<mem>-?[\d.]+)\s+(?P<times>\d+)\s+(?P<name>.*?)\s*$")
_RUN_ORDER = re.compile(r"=+ Run Order =+")
_SECTION_END = re.compile(r"^\s*=+ (?!Run Order)|^\s*$")
_DELEGATE_NODE = re.compile(r"Delegate$|^DELEGATE$|TfLite\w*Delegate", re.I)


def parse_op_profile(text: str) -> list[OpEntry]:
    """The per-op entries (run order) of a benchmark_model op-profiling output or a LiteRT profile summary.

    benchmark_model prints an initialization table first and then, for the regular runs, one
    `Run Order` table per profiled level: TFLite nodes, and for a delegate that reports its own
    operators (XNNPACK) a second table of those. The delegate's operators replace the delegate node:
    the result holds the finest entries the runtime reported, each exactly once."""
    text = normalise_output(text)
    marker = text.find("Operator-wise Profiling Info for Regular Benchmark Runs")
    body = text[marker:] if marker >= 0 else text
    tables: list[list[OpEntry]] = []
    for m in _RUN_ORDER.finditer(body):
        rows: list[OpEntry] = []
        for line in body[m.end():].split("\n")[1:]:
            if "[node type]" in line:
                continue
            r = _OP_ROW.match(line)
            if r is None:
                if rows and _SECTION_END.match(line):
                    break
                continue
            rows.append(OpEntry(r["type"].strip(), r["name"].strip(), float(r["avg"])))
        if rows:
            tables.append(rows)
    if not tables:
        raise BenchmarkOutputError("no per-op profile in the output (was --enable_op_profiling=true passed, and did "
                                   f"the run finish?); last lines:\n{output_tail(text)}")
    rows = [e for e in tables[0] if not (e.node_type.startswith("ModifyGraphWithDelegate") or
                                          e.node_type == "AllocateTensors")]
    delegated = [e for e in rows if _DELEGATE_NODE.search(e.node_type)]
    if delegated and len(tables) > 1 and len(delegated) == len(rows):  # fully delegated: its operators, in order
        rows = tables[1]
    return rows
