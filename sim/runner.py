"""Build Amaranth blocks to Verilog and run cocotb testbenches on them in Verilator.

One build directory per block and parameter set under the project cache
(``.cache/sim_build/<name>``); the Verilog is rewritten only when it changes, so a
second run reuses the compiled model.
"""

from __future__ import annotations

import json
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .. import toolchain

__all__ = ["SimBuild", "build_block", "run_testbench", "SimulationFailed"]


class SimulationFailed(RuntimeError):
    """A cocotb testcase failed; the message names it and where the log is."""


@dataclass
class SimBuild:
    name: str
    toplevel: str
    build_dir: Path
    verilog: Path
    build_seconds: float


MODELS = Path(__file__).parent / "models"


def build_block(component, name: str, *, waves: bool = False, toplevel: str | None = None,
                cell_models: bool = False) -> SimBuild:
    """Convert ``component`` to Verilog and compile it with Verilator (incrementally).

    ``cell_models`` adds behavioural models of the FPGA primitives the netlist may
    instantiate (``sim/models/ecp5_cells.v``).
    """
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner

    toolchain.apply_tool_env()
    toplevel = toplevel or name.split("__")[0]
    from .fst import TRACE_TAG

    build_dir = toolchain.cache_dir("sim_build") / (name + (f"_traced_{TRACE_TAG}" if waves else ""))
    build_dir.mkdir(parents=True, exist_ok=True)
    vfile = build_dir / f"{toplevel}.v"
    text = verilog.convert(component, name=toplevel)
    if not vfile.exists() or vfile.read_text() != text:
        vfile.write_text(text)
    t0 = time.monotonic()
    runner = get_runner("verilator")
    build_args = ["-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial", "fast"]
    if waves:
        from .fst import fst_build_args

        build_args += ["--trace-fst", *fst_build_args(), "--trace-structs"]
    sources = [vfile] + ([MODELS / "ecp5_cells.v"] if cell_models else [])
    runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir, always=False,
                 build_args=build_args, waves=waves, log_file=build_dir / "build.log")
    return SimBuild(name, toplevel, build_dir, vfile, time.monotonic() - t0)


def _results(xml_path: Path) -> list[tuple[str, bool, str]]:
    out = []
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        msg = ""
        for tag in ("failure", "error"):
            el = case.find(tag)
            if el is not None:
                msg = (el.get("message") or "") + (el.text or "")
        out.append((case.get("name"), not failed, msg))
    return out


def run_testbench(build: SimBuild, module: str, testcase: str | list[str] | None, config: dict, *,
                  waves: bool = False, seed: int = 1, quiet: bool = True) -> list[tuple[str, bool, str]]:
    """Run cocotb ``testcase`` of ``module`` on a built block with ``config`` in ``BEBERT_TB``.

    Returns ``(name, passed, message)`` per testcase; raises :class:`SimulationFailed`
    if any failed (also when called from pytest, where the message names the log).
    """
    from cocotb_tools.runner import get_runner

    toolchain.apply_tool_env()
    runner = get_runner("verilator")
    tag = testcase if isinstance(testcase, str) else "all" if testcase is None else f"{len(testcase)}cases"
    test_dir = build.build_dir / f"run_{tag}"
    test_dir.mkdir(exist_ok=True)
    log = test_dir / "sim.log"
    # The runner itself exits the process on failures when it sees PYTEST_CURRENT_TEST;
    # hide that so this function can report failures its own way.
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        xml = runner.test(test_module=module, hdl_toplevel=build.toplevel, hdl_toplevel_lang="verilog",
                          testcase=testcase,
                          build_dir=build.build_dir, test_dir=test_dir, seed=seed, waves=waves,
                          extra_env={"BEBERT_TB": json.dumps(config), "COCOTB_LOG_LEVEL": "WARNING" if quiet else "INFO"},
                          log_file=log, results_xml=str(test_dir / "results.xml"))
    except SystemExit as exc:
        raise SimulationFailed(f"simulator exited with {exc.code}; see {log}") from None
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved
    results = _results(Path(xml))
    failed = [r for r in results if not r[1]]
    if not results:
        raise SimulationFailed(f"no testcase ran (looked for {testcase!r} in {module}); see {log}")
    if failed:
        raise SimulationFailed("; ".join(f"{n} FAILED: {m.strip()[:2000]}" for n, _, m in failed) + f" (log {log})")
    return results
