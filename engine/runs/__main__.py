"""Command line of the runs registry: `python -m engine.runs submit|list|show|stop|resume|remove [--as NAME]`;
`python -m engine.runs cluster [--json]` describes the executor new runs go to (TUNEWISE_CLUSTER: a Ray cluster)."""

import argparse
import json
import sys
from pathlib import Path

from engine import runs, users
from engine.runs import executors, local
from engine.spec import RunSpec, SpecError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.runs", description=runs.__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["submit", "list", "show", "stop", "resume", "remove", "cluster", "_supervise"])
    p.add_argument("target", nargs="?", help="CONFIG for submit, run ID otherwise")
    p.add_argument("more", nargs="*", metavar="CONFIG", help="submit --chain: the later stages' configs, in order")
    p.add_argument(
        "--chain",
        action="store_true",
        help="submit: the configs are the stages of one pipeline, each "
        "starting from the one before (leave init_from out of them)",
    )
    p.add_argument(
        "--as",
        dest="acting",
        metavar="NAME",
        help="act as this account (workshop mode); without it, as the machine's administrator",
    )
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    try:
        if a.command == "_supervise":
            local.supervise(int(a.target))
            return 0
        if a.command == "cluster":
            return _print(executors.describe(), a.json)
        actor = users.find(a.acting) if a.acting else users.OWNER
        if a.command == "list":
            return _print(runs.list_runs(actor), a.json)
        if not a.target:
            raise runs.RunError(f"`{a.command}` needs {'a config file' if a.command == 'submit' else 'a run id'}.")
        if a.more and not (a.command == "submit" and a.chain):
            raise runs.RunError(
                "Several configs make one pipeline only with --chain (each stage starts from the one "
                "before); without it, submit them one at a time."
                if a.command == "submit"
                else f"`{a.command}` takes one run id."
            )
        if a.command == "submit" and a.chain:
            ids = runs.submit_chain([RunSpec.load(Path(c)) for c in [a.target, *a.more]], actor)
            return _print({"ids": ids}, a.json) if a.json else print(" ".join(map(str, ids))) or 0
        if a.command == "submit":
            run_id = runs.submit(RunSpec.load(Path(a.target)), actor)
            return _print({"id": run_id}, a.json) if a.json else print(run_id) or 0
        run_id = int(a.target) if a.target.isdigit() else -1
        if a.command == "remove":
            runs.remove(run_id, actor)
            return _print({"removed": run_id}, a.json)
        return _print({"show": runs.get, "stop": runs.stop, "resume": runs.resume}[a.command](run_id, actor), a.json)
    except (runs.RunError, SpecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _print(value, as_json: bool) -> int:
    if as_json:
        print(json.dumps(value, default=str))
    elif isinstance(value, list):
        for r in value:
            print(
                f"{r['id']:>4}  {r['owner']:<12} {r['state']:<9} {r['stage']:<4} {r['method']:<6} "
                f"pos={r['position'] or '-'} pid={r['pid'] or '-'}  {r['run_dir']}"
            )
    else:
        for k, v in value.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
