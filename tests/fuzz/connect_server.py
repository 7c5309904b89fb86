"""Fuzz the local Connect server (``opsync connect-server``) from the official OpenAPI spec with schemathesis.

Why this script exists: the unit and HTTP tests check the cases someone thought of;
schemathesis sends what the official spec allows, and what it does not, and checks
every answer against the spec (statuses, content types, headers, JSON schemas,
``Allow`` on 405, 401 without a token, ...). It is opt-in (``make fuzz``), not part of
``make test``: it needs schemathesis (``pip install -e '.[fuzz]'``) and the spec, which
has no licence and so is not in this repository (``--spec``, ``make fuzz SPEC=...``).

It starts ``opsync connect-server`` on a copy of ``examples/connect-data.yaml`` on a free
loopback port (through :mod:`opsync.tooling.harness`, as ``make run`` does), issues a
token for every vault, and runs ``st run`` twice: once on the ``/v1`` API (the spec's
``servers`` URL) and once on ``/heartbeat``, ``/health`` and ``/metrics``, which the spec
serves from the root (schemathesis applies one base URL to a whole run). Then it
scans the server's log: a traceback or an ERROR line is a finding too, whatever
schemathesis says.

Failures the spec causes are accepted in ``baseline.json`` beside this script (a
schemathesis baseline), each with the reason in its ``why``; docs/connect-server.md,
"Fuzzing", sums them up. The exit status is non-zero when schemathesis reports a
failure the baseline does not accept, or when the server logged a traceback or an
error. ``--update-baseline`` adds a run's failures to the file: write each new entry's
``why`` by hand, and only for a failure that is the spec's fault.

    python tests/fuzz/connect_server.py --spec PATH [--max-examples 25] [--seed 1] [-- st options]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from opsync.tooling.harness import Children, ConnectServerProcess

REPO = Path(__file__).resolve().parents[2]
DEMO_DATA = REPO / "examples" / "connect-data.yaml"
BASELINE = Path(__file__).resolve().with_name("baseline.json")
ROOT_PATHS = r"^/(heartbeat|health|metrics)$"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--spec", type=Path, required=True, help="the Connect OpenAPI spec (YAML)")
    parser.add_argument("--max-examples", type=int, default=25, help="test cases per operation and phase")
    parser.add_argument("--seed", type=int, default=1, help="schemathesis seed (reproducible runs)")
    parser.add_argument("--report-dir", type=Path, default=None, help="keep reports and the server log here")
    parser.add_argument("--no-baseline", action="store_true", help="report every failure, accepted or not")
    parser.add_argument(
        "--update-baseline",
        action="store_true",
        help="add this run's failures to baseline.json (then say why)",
    )
    parser.add_argument("st_args", nargs="*", help="more `st run` options (after --)")
    args = parser.parse_args(argv)
    if not args.spec.is_file():
        print(f"fuzz: no OpenAPI spec at {args.spec}", file=sys.stderr)
        return 2
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if st is None:
        print("fuzz: schemathesis is not installed (pip install -e '.[fuzz]')", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="opsync-fuzz-") as scratch:
        work = Path(scratch)
        reports = args.report_dir.resolve() if args.report_dir else work / "reports"
        reports.mkdir(parents=True, exist_ok=True)
        data = work / "connect-data.yaml"
        shutil.copyfile(DEMO_DATA, data)
        with Children() as children:
            server = ConnectServerProcess.start(children, data_path=data, log=reports / "connect-server.log")
            common = [
                st,
                "run",
                str(args.spec.resolve()),
                "--checks=all",
                f"--max-examples={args.max_examples}",
                f"--seed={args.seed}",
                "--workers=1",
                f"--header=Authorization: Bearer {server.token}",
                "--report=ndjson,junit",
                f"--report-dir={reports}",
                *([] if args.no_baseline else [f"--baseline={BASELINE}"]),
                *(["--baseline-update"] if args.update_baseline else []),
                *args.st_args,
            ]
            runs = {
                "api": [f"--url={server.url}/v1", f"--exclude-path-regex={ROOT_PATHS}"],
                "root": [f"--url={server.url}", f"--include-path-regex={ROOT_PATHS}"],
            }
            statuses: dict[str, int] = {}
            for name, extra in runs.items():
                print(f"\n==== schemathesis: {name} ({' '.join(extra)})", flush=True)
                # In the report folder: schemathesis keeps its replay cache (.schemathesis/) in the
                # working folder, so `st replay <id>` works from there (with --report-dir).
                statuses[name] = subprocess.run([*common, *extra], cwd=reports, check=False).returncode
            server.stop()
        log = (reports / "connect-server.log").read_text(encoding="utf-8", errors="replace")
    problems = [line for line in log.splitlines() if "Traceback" in line or " ERROR " in line]
    print("\n==== summary")
    for name, status in statuses.items():
        print(f"schemathesis {name}: exit status {status}{' (failures)' if status else ''}")
    print(f"server log: {len(problems)} traceback/ERROR line(s)" + (":" if problems else ""))
    for line in problems[:20]:
        print(f"  {line}")
    if args.report_dir:
        print(f"reports and the server log: {reports} (`st replay <id>` works from there)")
    return 1 if problems or any(statuses.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
