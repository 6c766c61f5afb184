"""The ``fedsecure`` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._errors import ConfigurationError, FedSecureError
from ._progress import ProgressDisplay
from .protocols import ProtocolKind, ThreatModel

__all__ = ["main"]

_PROTOCOLS = {kind.value: kind for kind in ProtocolKind}
# Every protocol, and per-value python-paillier as the reference (the same list as fedsecure.bench's).
_BENCH_PROTOCOLS = tuple(_PROTOCOLS) + ("phe",)


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _ring_bits(text: str) -> int:
    value = int(text)
    if not 2 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be an integer in [2, 64], got {text}")
    return value


#: The options that name something a command writes: checked before any work starts.
_OUTPUT_FILES = ("transcript", "markdown")
_OUTPUT_DIRECTORIES = ("out", "report", "checkpoint", "workdir")


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse an output path that cannot be written, before the work that would fill it."""
    import contextlib
    import os
    from pathlib import Path

    def refuse(option: str, path: Path, why: str) -> ConfigurationError:
        return ConfigurationError(f"--{option} {path}: {why}", parameter=option)

    for option in (*_OUTPUT_FILES, *_OUTPUT_DIRECTORIES, "plot"):
        value = getattr(args, option, None)
        if not isinstance(value, str) or not value:
            continue
        path = Path(value)
        is_file = option in _OUTPUT_FILES or (option == "plot" and args.command == "train")
        if is_file and path.is_dir():
            raise refuse(option, path, "is a directory")
        if option == "plot" and is_file and path.suffix.lower() not in (".png", ".pdf", ".svg"):
            raise refuse(option, path, "must end in .png, .pdf or .svg (the figure's format)")
        if not is_file and path.exists() and not path.is_dir():
            raise refuse(option, path, "is not a directory")
        if is_file:
            parent = path.absolute().parent
            if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                raise refuse(option, path, f"cannot be written ({parent} is not a writable directory)")
            continue
        created = [p for p in (path.absolute(), *path.absolute().parents) if not p.exists()]
        try:
            # Made and removed again: the directory can be created, and nothing is left behind before the command
            # itself writes there.
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise refuse(option, path, f"cannot be created ({error.strerror or error})") from None
        finally:
            for directory in created:
                with contextlib.suppress(OSError):
                    directory.rmdir()
        if path.exists() and not os.access(path, os.W_OK | os.X_OK):
            raise refuse(option, path, "is not a writable directory")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1], got {text}")
    return value


def _missing_extras(command: str, extras: str, error: ImportError) -> int:
    print(f"fedsecure {command} needs the {extras} extras ({error}); install them with\n"
          f"  .venv/bin/pip install -c constraints.txt -e '.[{extras}]'", file=sys.stderr)
    return 2


def _format_summary(summary: dict[str, Any]) -> str:
    if summary.get("decryption_threshold"):
        # Threshold Paillier: the round's threshold is the contributors it needs; decryption needs key shares.
        thresholds = (f"at least {summary['threshold']} contributors, decryption threshold "
                      f"{summary['decryption_threshold']} key shares")
    else:
        thresholds = f"threshold {summary['threshold']}"
    lines = [
        f"protocol          {summary['protocol']}  (neighbourhood {summary['degree']}, {thresholds}, "
        f"{summary['ring_bits']}-bit ring)",
        f"clients           {summary['clients']}  survivors {summary['survivors']}",
        f"vector length     {summary['dim']}",
    ]
    if summary["aborted"]:
        lines.append(f"ABORTED           {summary['abort_reason']}")
    else:
        verdict = "yes" if summary["correct"] else "NO"
        lines += [
            f"exact sum         {verdict}  (secure ring sum == plaintext ring sum of the survivors)",
            f"max abs error     {summary['max_abs_error']:.3g}  (decoded float sum vs float sum)",
        ]
    if "key_bits" in summary:
        lines.append(f"paillier          {summary['key_bits']}-bit key, {summary['slots_per_ciphertext']} slots of "
                     f"{summary['slot_bits']} bits, {summary['ciphertexts_per_client']} ciphertexts per client"
                     + (f", decryptor {summary['decryptor_seconds']:.3f} s" if summary["decryptor_seconds"] else ""))
    lines += [
        f"bytes up/client   {summary['bytes_up_per_client']:.0f}  ({summary['bytes_per_param']:.3f} per parameter)",
        f"bytes down/client {summary['bytes_down_per_client']:.0f}",
        f"client seconds    {summary['client_seconds']:.4f}  (median, all stages)",
        f"server seconds    {summary['server_seconds']:.4f}",
    ]
    return "\n".join(lines)


def _simulate(args: argparse.Namespace) -> int:
    from .runtime import simulate

    threat = ThreatModel(dropout_fraction=args.tolerate_dropout, corrupt_fraction=args.tolerate_corrupt)
    progress = ProgressDisplay(enabled=not args.quiet)
    try:
        report = simulate(protocol=_PROTOCOLS[args.protocol], clients=args.clients, dimension=args.dim,
                          dropout=args.dropout, seed=args.seed, threat=threat, ring_bits=args.ring_bits,
                          progress=progress, key_bits=args.key_bits, insecure_keys=args.insecure_small_keys,
                          record_fields=args.transcript is not None, active=args.active)
    finally:
        progress.close()
    if args.transcript is not None:
        from .runtime import write_transcript

        write_transcript(args.transcript, [report.transcript()])
    summary = report.to_json()
    if args.json:
        print(_strict_json(summary, sort_keys=True))
    else:
        print(_format_summary(summary))
    if summary["aborted"]:
        return 3
    return 0 if summary["correct"] else 1


def _flower(args: argparse.Namespace) -> int:
    import tempfile
    import time
    from pathlib import Path

    try:
        from .runtime.flower._launch import APP_DIRECTORY, LocalDeployment
    except ImportError:
        print("fedsecure flower: needs the flower extra: pip install -c constraints.txt 'fedsecure[flower]'",
              file=sys.stderr)
        return 2
    app = Path(args.app) if args.app else APP_DIRECTORY
    if not (app / "pyproject.toml").exists():
        print(f"fedsecure flower: no Flower app at {app}; pass --app DIR (see examples/flower)", file=sys.stderr)
        return 2
    if args.dp and args.job == "simulate":
        raise ConfigurationError("--dp trains with differential privacy: choose a training --job (linear784, ...)",
                                 parameter="dp")
    if (args.checkpoint or args.resume) and args.job == "simulate":
        raise ConfigurationError("--checkpoint and --resume are for training jobs", parameter="checkpoint")
    if not 0 < args.fraction <= 1:
        raise ConfigurationError("--fraction must be in (0, 1]", parameter="fraction")
    python_path = [os.getcwd()]
    if args.job != "simulate":
        from .runtime.flower._jobs import BUILT_IN_JOBS, load_job

        if args.job not in BUILT_IN_JOBS:
            # A user's job: checked here (it must import), and importable by every process the run starts.
            sys.path.insert(0, os.getcwd())
            load_job(args.job)
    # Absolute: the SuperLink, SuperNodes and ServerApp run in the workdir and read these paths from there.
    workdir = (Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="fedsecure-flower-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out, progress = workdir / "results.json", workdir / "progress.jsonl"
    run_config: dict[str, Any] = {
        "job": args.job, "protocol": args.protocol, "rounds": args.rounds, "dimension": args.dim,
        "nodes": args.supernodes, "min-clients": min(args.supernodes, 2), "stage-timeout": args.stage_timeout,
        "start-timeout": args.start_timeout, "out": str(out), "progress": str(progress), "fraction": args.fraction}
    if args.checkpoint:
        run_config["checkpoint"] = str(Path(args.checkpoint).resolve())
    if args.resume and not (Path(args.resume) / "checkpoint.npz").is_file():
        raise ConfigurationError(f"--resume {args.resume}: no checkpoint.npz there (written by --checkpoint)",
                                 parameter="resume")
    if args.resume:
        run_config["resume"] = str(Path(args.resume).resolve())
    if args.dp:
        if args.epsilon is None:
            raise ConfigurationError("--dp needs --epsilon (the budget over --rounds)", parameter="epsilon")
        run_config |= {"dp": args.dp, "epsilon": args.epsilon, "delta": args.delta}
    node_configs = _flower_credentials(args, workdir / "keys", run_config)
    if args.job not in ("simulate", "linear784", "cnn-digits", "logistic"):
        # Each node runs only the jobs its operator lists; on this machine the operator is the one who asked.
        node_configs = {i: node_configs.get(i, {}) | {"fedsecure-jobs": args.job}
                        for i in set(range(args.supernodes)) | node_configs.keys()}
    run_config["nodes"] = max(args.supernodes, len(node_configs))  # With the Paillier key holder's node.
    if args.transcript:
        run_config["transcript"] = str(Path(args.transcript).resolve())
    from .runtime.flower._jobs import check_run_config

    check_run_config(run_config)  # A job or DP setting that cannot work is refused here, before any process starts.
    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr)

    log(f"fedsecure flower: a SuperLink and {args.supernodes} SuperNodes on loopback; logs in {workdir}")
    started = time.monotonic()
    shown = 0
    with LocalDeployment(workdir, supernodes=args.supernodes, node_configs=node_configs,
                         python_path=python_path) as deployment:
        run = deployment.run(run_config, app=app)
        while run.poll() is None:
            if time.monotonic() - started > args.timeout:
                log(f"fedsecure flower: no result within {args.timeout:.0f} s; stopping every process")
                break
            lines = progress.read_text().splitlines() if progress.exists() else []
            for line in lines[shown:]:
                event = json.loads(line)
                if event["event"] == "stage":
                    log(f"  {event['stage']}: {event['answered']}/{event['expected']} answered "
                        f"in {event['seconds']:.1f} s")
                elif event["event"] == "round-end":
                    log(f"round {event['round'] + 1}/{args.rounds}: " + ("aborted: " + str(event["abort_reason"]) if event["aborted"]
                                                       else f"{len(event['survivors'])} survivors"))
            shown = len(lines)
            time.sleep(0.5)
    rounds = json.loads(out.read_text())["rounds"] if out.exists() else []
    summary = {"supernodes": args.supernodes, "job": args.job, "protocol": args.protocol, "active": args.active,
               "dp": args.dp, "workdir": str(workdir),
               # A resumed run's results hold only its new rounds: it completed when its last round is the last.
               "seconds": time.monotonic() - started,
               "completed": run.returncode == 0 and bool(rounds) and rounds[-1]["round"] + 1 == args.rounds,
               "rounds": rounds}
    if args.json:
        print(_strict_json(summary, sort_keys=True))
    else:
        for r in rounds:
            detail = (f"aborted ({r['abort_reason']})" if r["aborted"] else
                      f"{len(r['survivors'])}/{r['cohort']} survivors, " +
                      (f"accuracy {100 * r['accuracy']:.1f}%" if r.get("accuracy") is not None else
                       f"sum {'exact' if r.get('correct') else 'WRONG'}"))
            if r.get("epsilon") is not None:
                detail += f", epsilon {r['epsilon']:.3f}"
            print(f"round {r['round'] + 1}/{args.rounds}: {detail}, {r['seconds']:.1f} s")
        print(f"{len(rounds)} rounds in {summary['seconds']:.1f} s; results in {out}")
        if not summary["completed"]:
            print(f"the run did not complete: see {workdir / 'run.log'} and the SuperNodes' logs", file=sys.stderr)
    if not summary["completed"] or all(r["aborted"] for r in rounds):
        return 3
    return 1 if any(r.get("correct") is False for r in rounds) else 0


def _flower_credentials(args: argparse.Namespace, keys: Any, run_config: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Write the keys a protocol needs for a loopback run, and the node configs that name them."""
    from .protocols import PaillierDeployment
    from .runtime.flower import write_identities, write_paillier_deployment

    nodes = range(args.supernodes)
    protocol = _PROTOCOLS[args.protocol]
    if args.active:
        if protocol not in (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS):
            raise ConfigurationError("--active is SecAgg's and SecAgg+'s", parameter="active")
        run_config["identities"] = str(write_identities(keys, nodes))
        return {i: {"fedsecure-client-id": i, "fedsecure-identity": str(keys / f"client-{i}.identity.json")}
                for i in nodes}
    if protocol is ProtocolKind.PLAINTEXT:
        return {i: {"fedsecure-protocols": "plaintext"} for i in nodes}
    if not protocol.is_paillier:
        return {}
    deployment = PaillierDeployment.create(protocol, list(nodes), key_bits=args.key_bits,
                                           insecure=args.insecure_small_keys)
    run_config["paillier"] = str(write_paillier_deployment(keys, deployment))
    policy = {"fedsecure-protocols": protocol.value, "fedsecure-allow-insecure-keys": args.insecure_small_keys}
    configs = {i: policy | {"fedsecure-client-id": i, "fedsecure-paillier": str(keys / f"client-{i}.paillier.json")}
               for i in nodes}
    if deployment.key_holder is not None:
        # One more SuperNode: the separate decryptor, holding the private key.
        configs[args.supernodes] = policy | {"fedsecure-key-holder": str(keys / "key-holder.json")}
    return configs


def _audit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ._io import atomic_write_text
    from .audit import TranscriptError, read_transcript, run_checks
    from .audit._report import report_json, report_markdown, summary_lines

    if args.transcript is None and not args.leakage and not args.dp_audit and not args.attack:
        raise ConfigurationError("give a transcript to check, --attack, --leakage, --dp-audit, or several",
                                 parameter="transcript")
    progress = ProgressDisplay(enabled=not args.quiet)
    everything = args.attack == "all"
    if everything:
        # "all" is the whole audit: with the torch and examples extras it adds gradient leakage and the DP audit,
        # and without a transcript of its own it checks a fresh simulated SecAgg+ round.
        import importlib.util

        extras = all(importlib.util.find_spec(name) is not None for name in ("torch", "opacus", "sklearn"))
        args.leakage = args.leakage or extras
        args.dp_audit = args.dp_audit or extras
        if args.transcript is None:
            from .runtime import simulate, write_transcript

            import tempfile

            target = Path(args.report) if args.report else Path(tempfile.mkdtemp(prefix="fedsecure-audit-"))
            args.transcript = str(target / "transcript.jsonl")
            with progress.step(f"simulating a SecAgg+ round of {args.clients} clients to check"):
                simulated = simulate(protocol=ProtocolKind.SECAGG_PLUS, clients=args.clients, dimension=1000,
                                     dropout=0.1, record_fields=True)
            target.mkdir(parents=True, exist_ok=True)
            write_transcript(args.transcript, [simulated.transcript()])
            if not args.report:
                progress.note(f"the simulated round's transcript is in {args.transcript} (--report DIR keeps "
                              "everything in one place)")
    checks = []
    if args.transcript is not None:
        try:
            rounds = read_transcript(args.transcript)
        except OSError as error:
            raise TranscriptError(f"cannot read {args.transcript}: {error.strerror}") from None
        checks = run_checks(rounds)
    attacks: list[Any] = []
    if args.attack:
        from .audit._attacks import attack_names, run_attack

        protocol = _PROTOCOLS[args.protocol]
        names = attack_names(protocol) if args.attack == "all" else [args.attack]
        if args.attack != "all" and args.attack not in attack_names(protocol):
            raise ConfigurationError(f"--attack {args.attack} does not target {protocol.value}; for it choose from "
                                     f"{', '.join(attack_names(protocol))}", parameter="attack")
        if protocol.is_paillier and args.clients < 5:
            raise ConfigurationError("the Paillier attacks need --clients 5 or more", parameter="clients")
        for name in names:
            with progress.step(f"attack {name} ({protocol.value}, {args.clients} clients)"):
                attacks.append(run_attack(name, protocol=protocol, clients=args.clients))
    leakage: list[Any] = []
    audits: list[Any] = []
    try:
        if args.leakage:
            from .audit._leakage import gradient_leakage

            for kind in (ProtocolKind.PLAINTEXT, ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS):
                with progress.step(f"gradient leakage against {kind.value}"):
                    leakage.append(gradient_leakage(kind, clients=args.clients))
        if args.dp_audit:
            from .audit._empirical import canary_audit

            # The two mechanisms as fedsecure calibrates them, then one with half the calibrated noise.
            for level, scale in (("central", 1.0), ("distributed", 1.0), ("central", 0.5)):
                with progress.step(f"canary audit of {level} DP" + ("" if scale == 1.0 else f", noise x{scale:g}")):
                    audits.append((canary_audit(level, epsilon=args.epsilon, canaries=args.canaries,
                                                noise_scale=scale), scale != 1.0))
    except ImportError as error:  # pragma: no cover - depends on the installed extras
        return _missing_extras("audit --leakage/--dp-audit", "torch,examples", error)
    output = report_json(transcript=args.transcript, checks=checks, attacks=attacks, leakage=leakage, audits=audits)
    if args.report:
        report = Path(args.report)
        plot = None
        if leakage:
            from .audit._leakage import plot_leakage

            plot_leakage(leakage, report / "gradient_leakage.png")
            plot = "gradient_leakage.png"
        atomic_write_text(report / "report.md", report_markdown(
            transcript=args.transcript, checks=checks, attacks=attacks, leakage=leakage, audits=audits,
            canaries=args.canaries, leakage_plot=plot))
        atomic_write_text(report / "audit.json", _strict_json(output, indent=1) + "\n")
    if args.json:
        print(_strict_json(output, indent=1))
    else:
        print("\n".join(summary_lines(checks=checks, attacks=attacks, leakage=leakage, audits=audits)))
    # Failing: a check, an attack that defeats the protective configuration, or a correctly calibrated mechanism
    # flagged. The deliberately miscalibrated one is meant to be.
    broken = [a for a in attacks if a.protected.defeated]
    flagged = [a for a, miscalibrated in audits if a.violation and not miscalibrated]
    return 0 if all(r.passed for r in checks) and not broken and not flagged else 1


def _train(args: argparse.Namespace) -> int:
    try:
        import sklearn  # noqa: F401
        import torch  # noqa: F401

        from .fl import train_federated
        from .fl.examples import EXAMPLES
    except ImportError as error:  # pragma: no cover - depends on the installed extras
        return _missing_extras("train", "torch,examples", error)

    import logging
    import os

    # This command reports aborted rounds itself, one line per round.
    logging.getLogger("fedsecure.fl").setLevel(logging.ERROR)
    if args.plot and os.path.dirname(args.plot):
        os.makedirs(os.path.dirname(args.plot), exist_ok=True)
    if args.dp is None and (args.epsilon is not None or args.mechanism is not None):
        raise ConfigurationError("--epsilon and --mechanism take effect only with --dp local|central|distributed",
                                 parameter="dp")
    builder = EXAMPLES[args.example]
    options: dict[str, Any] = {"protocol": _PROTOCOLS[args.protocol], "seed": args.seed,
                               "key_bits": args.key_bits, "insecure_keys": args.insecure_small_keys}
    if args.clients is not None:
        options["clients"] = args.clients
    if args.dropout is not None:
        options["dropout"] = args.dropout
    experiment = builder(**options)
    if args.dp is not None:
        experiment.federation = dataclasses.replace(experiment.federation, dp=_dp_config(args, experiment))
    if args.transcript is not None:
        # A fresh file: every round of this run appends its transcript, for `fedsecure audit`.
        open(args.transcript, "w", encoding="utf-8").close()
        experiment.federation = dataclasses.replace(experiment.federation, transcript=args.transcript)
    ledger = experiment.federation.ledger
    # With --json, stdout holds only the result: the rounds go to stderr, on a terminal or not.
    progress = ProgressDisplay(enabled=not args.quiet)

    ran: list[Any] = []

    def on_round(record: Any) -> None:
        ran.append(record)
        if not args.quiet:
            status = f"ABORTED ({record.abort_reason})" if record.aborted else f"survivors {record.survivors}/{record.cohort}"
            line = (f"round {record.round + 1:>3}/{args.rounds}  loss {record.loss:.4f}  accuracy "
                    f"{100 * record.accuracy:5.1f}%  {status}")
            if record.epsilon is not None:
                line += f"  epsilon {record.epsilon:.3f}"
            if args.json:
                progress.note(line)
            else:
                print(line, flush=True)

    result = train_federated(experiment.federation, rounds=args.rounds, evaluate=experiment.evaluate,
                             out=args.out, resume=args.resume, on_round=on_round, stop=experiment.stop)
    if args.resume and not ran:
        print(f"fedsecure train: the checkpoint in {args.resume} already holds {len(result.history)} rounds "
              f"(--rounds {args.rounds}): nothing to run; raise --rounds to continue", file=sys.stderr)
    elif ran and len(result.history) < args.rounds and experiment.stop is not None:
        print(f"fedsecure train: stopped after round {len(result.history)} of {args.rounds}: the {args.example} "
              "example's stopping rule was met", file=sys.stderr)
    if args.plot:
        from ._plotting import dp_title

        _plot_history(result.history, args.plot, title=dp_title(
            f"{args.example} ({args.protocol})", level=args.dp,
            epsilon=ledger.epsilon if ledger is not None else None,
            delta=ledger.config.delta if ledger is not None else None))
    summary = {
        "example": args.example,
        "protocol": args.protocol,
        "rounds": len(result.history),
        "final_accuracy": result.final_accuracy,
        "final_loss": result.final_loss,
        "seconds": result.seconds,
        "metrics": experiment.metrics(experiment.federation.model) if experiment.metrics else {},
        "history": [{"round": r.round, "loss": r.loss, "accuracy": r.accuracy, "survivors": r.survivors,
                     "aborted": r.aborted, "abort_reason": r.abort_reason, "seconds": r.seconds,
                     "aggregation_seconds": r.aggregation_seconds, "epsilon": r.epsilon} for r in result.history],
    }
    if ledger is not None:
        summary["privacy"] = ledger.to_json()
    if args.json:
        print(_strict_json(summary, sort_keys=True))
        return 3 if result.history and all(r.aborted for r in result.history) else 0
    else:
        extra = "".join(f"  {name} {value:.4f}" for name, value in summary["metrics"].items())
        if ledger is not None:
            extra += (f"  epsilon {ledger.epsilon:.3f} (delta {ledger.config.delta:g}, {ledger.config.level.value} "
                      f"DP, {ledger.config.adjacency_name} adjacency, {ledger.accountant_name} accountant)")
            if ledger.config.level.value == "distributed" and ledger.sample_rate < 1:
                extra += f"; against the server, which knows the cohorts, {ledger.epsilon_without_amplification:.3f}"
        print(f"final accuracy {100 * (result.final_accuracy or 0):.1f}%  loss {result.final_loss:.4f}{extra}  "
              f"in {result.seconds:.1f}s")
    return 3 if result.history and all(r.aborted for r in result.history) else 0


def _privacy(args: argparse.Namespace) -> int:
    try:
        import opacus  # noqa: F401  (the accountants are Opacus')
    except ImportError as error:  # pragma: no cover - depends on the installed extras
        return _missing_extras("privacy", "torch", error)
    from .dp import (Accountant, Adjacency, Mechanism, calibrate, calibrate_distributed, gaussian_epsilon,
                     plan_distributed)

    mechanism, accountant, adjacency = Mechanism(args.mechanism), Accountant(args.accountant), Adjacency(args.adjacency)
    factor = adjacency.sensitivity_factor
    if (args.noise_multiplier is None) == (args.target_epsilon is None):
        raise ConfigurationError("give exactly one of --noise-multiplier and --target-epsilon",
                                 parameter="noise_multiplier")
    if args.noise_multiplier is not None and not (math.isfinite(args.noise_multiplier) and args.noise_multiplier > 0):
        raise ConfigurationError(f"noise multiplier {args.noise_multiplier} must be positive and finite (zero gives "
                                 "no privacy at all)", parameter="noise_multiplier")
    if mechanism is Mechanism.GAUSSIAN:
        # The Gaussian's accounting needs only the noise multiplier; a distributed flag here would be ignored.
        ignored = [flag for flag, value in (("--clients", args.clients), ("--max-clients", args.max_clients),
                                            ("--clip", args.clip), ("--bits", args.bits), ("--dim", args.dim))
                   if value is not None]
        if ignored:
            raise ConfigurationError(f"{', '.join(ignored)} describe ddgauss and skellam plans; the gaussian needs "
                                     "only --noise-multiplier or --target-epsilon", parameter=ignored[0][2:])
        if args.noise_multiplier is not None and not 1e-4 <= args.noise_multiplier <= 1e6:
            raise ConfigurationError(f"noise multiplier {args.noise_multiplier:g} is outside [1e-4, 1e6], where the "
                                     "Gaussian's accounting is numerically sound", parameter="noise_multiplier")
    args.bits = 20 if args.bits is None else args.bits
    args.dim = 10_000 if args.dim is None else args.dim
    if not 0 < args.delta < 1:
        raise ConfigurationError("delta must lie in (0, 1)", parameter="delta")
    if args.population is not None and args.delta >= 1 / args.population:
        raise ConfigurationError(f"delta must be below 1/population = {1 / args.population:g}", parameter="delta")
    if not 0 < args.sample_rate <= 1:
        raise ConfigurationError("sample rate must lie in (0, 1]", parameter="sample_rate")
    if mechanism is not Mechanism.GAUSSIAN and args.sample_rate != 1:
        raise ConfigurationError(f"{mechanism.value} runs over fixed-size cohorts, not Poisson samples: leave "
                                 "--sample-rate out and give --population, from which each cohort of --max-clients "
                                 "(default --clients) is drawn without replacement", parameter="sample_rate")
    if mechanism is Mechanism.GAUSSIAN and factor > 1 and args.sample_rate < 1:
        raise ConfigurationError("replace-one adjacency is accounted without sampling only: --sample-rate 1, or "
                                 "--adjacency zero-out", parameter="adjacency")
    if mechanism is not Mechanism.GAUSSIAN and args.accountant != "rdp":
        raise ConfigurationError(f"{mechanism.value} is accounted with its own Rényi bound; --accountant is the "
                                 "gaussian's", parameter="accountant")
    summary: dict[str, Any] = {"mechanism": mechanism.value, "delta": args.delta, "sample_rate": args.sample_rate,
                               "rounds": args.rounds, "adjacency": adjacency.value}
    if mechanism is Mechanism.GAUSSIAN:
        def epsilon_of(z: float) -> float:
            return gaussian_epsilon(z / factor, args.sample_rate, args.rounds, args.delta, accountant)

        noise = args.noise_multiplier or calibrate(epsilon_of, args.target_epsilon, high=1e3).noise
        summary.update(noise_multiplier=noise, epsilon=epsilon_of(noise), accountant=accountant.value)
    else:
        if args.clients is None or args.clip is None:
            raise ConfigurationError(f"{mechanism.value} needs --clients (noise shares per round) and --clip",
                                     parameter="clients")

        cohort = args.max_clients or args.clients
        if cohort < args.clients:
            raise ConfigurationError("--max-clients must be at least --clients", parameter="max_clients")
        if args.population is not None and args.population < cohort:
            raise ConfigurationError(f"a cohort of {cohort} cannot be drawn from a population of {args.population}",
                                     parameter="population")
        # A cohort of fixed size drawn without replacement from the population, hidden from the model's users.
        rate = 1.0 if args.population is None else cohort / args.population

        def plan(z: float) -> Any:
            return plan_distributed(mechanism=mechanism, dimension=args.dim, clip=args.clip, bits=args.bits,
                                    expected_clients=args.clients, max_clients=cohort, noise_multiplier=z)

        def distributed_epsilon(chosen: Any, sample_rate: float = rate) -> float:
            return float(chosen.epsilon(survivors=args.clients, rounds=args.rounds, delta=args.delta,
                                        adjacency=adjacency, sample_rate=sample_rate))

        chosen = (plan(args.noise_multiplier) if args.noise_multiplier is not None
                  else calibrate_distributed(plan, distributed_epsilon, args.target_epsilon))
        amplified = "amplified by sampling without replacement" if rate < 1 else "no amplification"
        summary.update(noise_multiplier=chosen.noise_multiplier, epsilon=distributed_epsilon(chosen),
                       epsilon_against_server=distributed_epsilon(chosen, 1.0), sample_rate=rate,
                       accountant=f"rdp ({mechanism.value} bound, {amplified})", clients=args.clients,
                       bits=args.bits, dim=args.dim, clip=args.clip, scale=chosen.scale,
                       local_variance=chosen.local_variance, l2_sensitivity=chosen.l2_sensitivity,
                       wrap_probability_bound=chosen.wrap_bound)
    if args.json:
        print(_strict_json(summary, sort_keys=True))
    else:
        rate = summary["sample_rate"]
        sampling = ("without amplification by sampling" if rate >= 1 else
                    f"at Poisson sampling rate {rate:g}" if mechanism is Mechanism.GAUSSIAN else
                    f"against whoever sees only the released model (cohorts of {args.max_clients or args.clients} "
                    f"drawn without replacement from {args.population})")
        print(f"{mechanism.value}: noise multiplier {summary['noise_multiplier']:.4f} gives epsilon "
              f"{summary['epsilon']:.4f} at delta {args.delta:g} after {args.rounds} rounds {sampling}; "
              f"{adjacency.value} adjacency, {summary['accountant']} accountant")
        if mechanism is not Mechanism.GAUSSIAN and rate < 1:
            print(f"  against the server, which knows every cohort: epsilon {summary['epsilon_against_server']:.4f} "
                  f"for a client drawn in all {args.rounds} rounds (no amplification)")
        if mechanism is not Mechanism.GAUSSIAN:
            print(f"  per client: variance {summary['local_variance']:.6g} in a {args.bits}-bit ring at scale "
                  f"{summary['scale']:.6g}; wrap-around probability below {max(summary['wrap_probability_bound'], 1e-300):.2g}")
    return 0


def _dp_config(args: argparse.Namespace, experiment: Any) -> Any:
    """The DPConfig ``fedsecure train --dp ...`` asks for; local DP is calibrated per client with Opacus."""
    from .dp import Adjacency, Mechanism, PrivacyLevel
    from .fl.examples import dp_config_for

    if args.epsilon is None:
        raise ConfigurationError("--dp needs --epsilon (the budget over --rounds)", parameter="epsilon")
    if args.dp == "local" and args.adjacency != "zero-out":
        raise ConfigurationError("local DP-SGD is accounted for adding or removing one example; --adjacency is for "
                                 "central and distributed DP", parameter="adjacency")
    return dp_config_for(experiment, level=PrivacyLevel(args.dp), epsilon=args.epsilon, delta=args.delta,
                         rounds=args.rounds, mechanism=Mechanism(args.mechanism) if args.mechanism else None,
                         bits=args.bits, max_grad_norm=args.max_grad_norm, name=args.example,
                         adjacency=Adjacency(args.adjacency))


def _plot_history(history: Sequence[Any], path: str, *, title: str) -> None:
    from pathlib import Path

    from ._plotting import integer_axis, pyplot, save

    rounds = [r.round + 1 for r in history]
    figure, (left, right) = pyplot().subplots(1, 2, figsize=(9, 3.5))
    left.plot(rounds, [r.loss for r in history], marker="o", color="#0072B2")
    left.set_ylabel("test loss")
    right.plot(rounds, [100 * (r.accuracy or 0) for r in history], marker="o", color="#009E73")
    right.set_ylabel("test accuracy (%)")
    for axes in (left, right):
        axes.set_xlabel("round")
        integer_axis(axes.xaxis)
        axes.grid(True, alpha=0.3)
    aborted = [r.round + 1 for r in history if r.aborted]
    for index, number in enumerate(aborted):
        right.axvline(number, color="#D55E00", alpha=0.4, label="aborted round" if index == 0 else None)
    figure.suptitle(title, fontsize=10)
    save(figure, Path(path), legend_axes=right if aborted else None, dpi=120)


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .bench import PROFILES, run_benchmark, run_utility
    from .bench._output import clean

    profile = PROFILES["full" if args.full else "quick"]
    overrides: dict[str, Any] = {}
    if args.clients:
        overrides["clients_sweep"] = tuple(args.clients)
    if args.dims:
        overrides["dim_sweep"] = tuple(args.dims)
    if args.dropouts:
        overrides["dropout_sweep"] = tuple(args.dropouts)
    if args.rounds:
        overrides["dropout_rounds"] = args.rounds
        overrides["peer_cases"] = tuple(dataclasses.replace(case, rounds=args.rounds) if case.dropout else case
                                        for case in profile.peer_cases)
    if args.repeats:
        overrides["repeats"] = args.repeats
    if args.utility_rounds:
        overrides["utility_rounds"] = args.utility_rounds
    if args.utility_epsilons:
        overrides["utility_epsilons"] = tuple(args.utility_epsilons)
    if args.utility_seeds:
        overrides["utility_seeds"] = tuple(args.utility_seeds)
    if args.key_bits:
        if args.key_bits < 2048:
            raise ConfigurationError("bench measures deployable keys: --key-bits must be at least 2048",
                                     parameter="key_bits")
        overrides["key_bits"] = args.key_bits
    profile = dataclasses.replace(profile, **overrides)

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    if args.utility or args.utility_only:
        try:
            import matplotlib  # noqa: F401
            import opacus  # noqa: F401
            import sklearn  # noqa: F401
        except ImportError as error:
            return _missing_extras("bench --utility", "torch,examples", error)
    if args.plot or args.markdown:
        try:
            import matplotlib  # noqa: F401
        except ImportError as error:
            return _missing_extras("bench --plot", "bench", error)
    if args.render:
        # Re-render a finished run (plots, Markdown, tables) without measuring anything again.
        try:
            data = json.loads(Path(args.render).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ConfigurationError(f"{args.render} is not a fedsecure bench.json (not JSON)",
                                     parameter="render") from None
        if not isinstance(data, dict) or data.get("format") != "fedsecure-bench/1":
            raise ConfigurationError(f"{args.render} is not a fedsecure bench.json", parameter="render")
        return _bench_outputs(args, data, log, write_results=False)
    log(f"fedsecure bench, profile {profile.name}: progress below" +
        (f", results in {args.out}" if args.out else ""))
    if args.utility_only:
        from .bench._environment import environment

        args.utility = True
        data = {"format": "fedsecure-bench/1", "environment": environment(), "records": [], "comparisons": [],
                "skipped": [], "profile": dataclasses.asdict(profile) | {"protocols": []}}
    else:
        data = run_benchmark(profile, protocols=args.protocols, peers=not args.no_peers, seed=args.seed,
                             log=log).to_json()
    if args.utility:
        log(f"utility: digits-writers, {profile.utility_clients} writers, {profile.utility_per_round} a round, "
            f"{profile.utility_rounds} rounds, epsilons {', '.join(f'{e:g}' for e in profile.utility_epsilons)}, "
            f"seeds {', '.join(map(str, profile.utility_seeds))}, levels {', '.join(args.utility_levels)}")
        data["utility"] = run_utility(clients=profile.utility_clients, per_round=profile.utility_per_round,
                                      rounds=profile.utility_rounds, epsilons=profile.utility_epsilons,
                                      seeds=profile.utility_seeds, levels=args.utility_levels, log=log)
    return _bench_outputs(args, clean(data), log, write_results=True)


def _bench_outputs(args: argparse.Namespace, data: dict[str, Any], log: Callable[[str], None], *,
                   write_results: bool) -> int:
    from pathlib import Path

    from .bench import write_csv, write_json, write_markdown, write_plots
    from .bench._output import markdown_tables

    if write_results and args.out:
        out = Path(args.out)
        write_json(data, out / "bench.json")
        write_csv(data["records"], out / "bench.csv")
        write_csv(data["comparisons"], out / "comparisons.csv")
        if data.get("utility"):
            write_csv(data["utility"]["records"], out / "utility.csv")
    plots = Path(args.plot) if args.plot else None
    if plots is not None:
        for path in write_plots(data, plots):
            log(f"wrote {path}")
    if args.markdown:
        try:
            write_markdown(data, Path(args.markdown), plots=plots)
        except FileExistsError as error:
            print(f"fedsecure bench: {error}", file=sys.stderr)
            return 2
        log(f"wrote {args.markdown}")
    if args.json:
        print(_strict_json(data, indent=1))
    else:
        print(markdown_tables(data))
    wrong = [r for r in data["records"] if r["implementation"] == "fedsecure" and r.get("wrong_rounds")]
    return 1 if wrong else 0


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fedsecure", description="Secure aggregation for federated learning.")
    parser.add_argument("--version", action="version", version=f"fedsecure {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser(
        "simulate",
        help="run one secure-aggregation round in process and check it against the plaintext sum",
        description="Run one round over simulated clients. Exit status: 0 exact sum, 1 wrong sum, "
        "2 invalid configuration, 3 round aborted.",
    )
    sim.add_argument("--protocol", choices=sorted(_PROTOCOLS), default="secagg+")
    sim.add_argument("--clients", type=_count, default=100, help="cohort size (default 100)")
    sim.add_argument("--dim", type=_count, default=10_000, help="update length (default 10000)")
    sim.add_argument("--dropout", type=_fraction, default=0.1,
                     help="fraction of clients that go silent, each from a random stage (default 0.1)")
    sim.add_argument("--tolerate-dropout", type=_fraction, default=0.1,
                     help="dropout fraction the threshold and graph are chosen for (default 0.1)")
    sim.add_argument("--tolerate-corrupt", type=_fraction, default=0.2,
                     help="fraction of clients that may collude with the server (default 0.2)")
    sim.add_argument("--ring-bits", type=_ring_bits, default=32, help="ring size in bits, 2 to 64 (default 32)")
    sim.add_argument("--seed", type=int, default=0,
                     help="seed for the simulated data and dropout schedule only; keys always come from the OS")
    sim.add_argument("--key-bits", type=int, default=2048,
                     help="Paillier modulus size for the paillier protocols (default 2048)")
    sim.add_argument("--insecure-small-keys", action="store_true",
                     help="allow Paillier keys below 2048 bits (demos and tests only)")
    sim.add_argument("--active", action="store_true",
                     help="SecAgg/SecAgg+ against an actively malicious server: signed keys, a consistency check, "
                     "t > 2k/3 (see SECURITY.md)")
    sim.add_argument("--transcript", metavar="FILE",
                     help="write the round's audit transcript (JSON lines, public fields only) for `fedsecure audit`")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--quiet", action="store_true", help="no progress display")
    sim.set_defaults(handler=_simulate)

    train = commands.add_parser(
        "train",
        help="federated training of a seed example with secure aggregation",
        description="Train one of the seed examples over simulated clients; aborted rounds leave the model "
        "unchanged. Needs the torch and examples extras. Exit status: 0 trained, 2 invalid arguments or "
        "configuration, 3 every round aborted.",
    )
    train.add_argument("--example", choices=["linear784", "logistic", "cnn-digits", "digits-writers"], default="linear784")
    train.add_argument("--protocol", choices=sorted(_PROTOCOLS), default="secagg+")
    train.add_argument("--clients", type=_count, default=None, help="number of clients (example default)")
    train.add_argument("--rounds", type=_count, default=10,
                       help="total rounds, counting rounds already done in a --resume directory (default 10)")
    train.add_argument("--dropout", type=_fraction, default=None,
                       help="fraction of each cohort that drops out (example default)")
    train.add_argument("--seed", type=int, default=0, help="data, sampling and dropouts; never keys")
    train.add_argument("--out", help="save the global model and history here after every round")
    train.add_argument("--resume", help="continue from a directory written by --out (and keep saving there "
                       "unless --out names another)")
    train.add_argument("--plot", help="write a PNG of loss and accuracy per round")
    train.add_argument("--transcript", metavar="FILE",
                       help="write every round's audit transcript (JSON lines, with the DP record) for `fedsecure audit`")
    train.add_argument("--key-bits", type=int, default=2048,
                       help="Paillier modulus size for the paillier protocols (default 2048)")
    train.add_argument("--insecure-small-keys", action="store_true",
                       help="allow Paillier keys below 2048 bits (demos and tests only)")
    train.add_argument("--dp", choices=["local", "central", "distributed"],
                       help="differential privacy: local DP-SGD (Opacus), central DP-FedAvg, or distributed "
                       "noise under SecAgg")
    train.add_argument("--epsilon", type=float, help="target epsilon over --rounds (with --dp)")
    train.add_argument("--delta", type=float, default=1e-5, help="target delta (default 1e-5)")
    train.add_argument("--mechanism", choices=["ddgauss", "skellam"], help="distributed DP noise (default ddgauss)")
    train.add_argument("--bits", type=int, default=20, help="ring bits for distributed DP (default 20)")
    train.add_argument("--max-grad-norm", type=float, default=1.0, help="per-example clip for local DP (default 1)")
    train.add_argument("--adjacency", choices=["zero-out", "replace-one"], default="zero-out",
                       help="neighbouring relation for central and distributed DP: one client's update zeroed (its "
                       "noise share kept), or replaced by any other (twice the sensitivity); default zero-out")
    train.add_argument("--json", action="store_true", help="print one JSON object")
    train.add_argument("--quiet", action="store_true", help="no per-round progress")
    train.set_defaults(handler=_train)
    bench = commands.add_parser(
        "bench",
        help="benchmark every protocol against its peers (Flower's SecAgg+, per-value phe) in the same run",
        description="Sweep protocols over clients, vector length and dropout; compare with Flower's own SecAgg+ "
        "(with the bench extra) and per-value phe, pair by pair. Writes bench.json, bench.csv and comparisons.csv to "
        "--out. Exit status: 0 done, 1 a round fedsecure completed returned a wrong sum, 2 invalid arguments.",
    )
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sweeps, under a minute (the default)")
    size.add_argument("--full", action="store_true", help="the sweeps behind the published figures (under an hour)")
    bench.add_argument("--protocols", nargs="+", choices=list(_BENCH_PROTOCOLS), default=list(_BENCH_PROTOCOLS),
                       help="which to run (default all; phe is per-value python-paillier, extrapolated)")
    bench.add_argument("--clients", nargs="+", type=_count, help="override the clients sweep")
    bench.add_argument("--dims", nargs="+", type=_count, help="override the vector-length sweep")
    bench.add_argument("--dropouts", nargs="+", type=_fraction, help="override the dropout sweep")
    bench.add_argument("--rounds", type=_count, help="rounds per dropout level and per peer case with dropout")
    bench.add_argument("--repeats", type=_count, help="timed rounds per sweep point (Paillier protocols: the profile's own count)")
    bench.add_argument("--key-bits", type=int, help="Paillier modulus size (default 2048)")
    bench.add_argument("--no-peers", action="store_true", help="skip Flower's SecAgg+ even when installed")
    bench.add_argument("--utility", action="store_true",
                       help="also run the privacy-utility suite: digits-writers without DP and under central and "
                       "distributed DP (24-, 16- and 12-bit rings) at several epsilons and seeds, two runs at a time "
                       "(needs the torch and examples extras)")
    bench.add_argument("--utility-only", action="store_true", help="run the privacy-utility suite alone")
    bench.add_argument("--utility-rounds", type=_count, help="rounds of each utility run (profile's by default)")
    bench.add_argument("--utility-epsilons", type=float, nargs="+", help="epsilons of the utility suite")
    bench.add_argument("--utility-seeds", type=int, nargs="+", help="seeds of the utility suite")
    bench.add_argument("--utility-levels", nargs="+", choices=["none", "central", "distributed", "local"],
                       default=["none", "central", "distributed"],
                       help="the levels the utility suite trains (default none central distributed; local DP-SGD "
                       "is record-level and slow)")
    bench.add_argument("--seed", type=int, default=0, help="simulated data and dropouts only; never keys")
    bench.add_argument("--out", metavar="DIR", help="write bench.json and the CSV records here (nothing is written "
                       "without it, --plot or --markdown)")
    bench.add_argument("--plot", metavar="DIR", help="write the PNG plots here")
    bench.add_argument("--markdown", metavar="FILE",
                       help="write the tables here (between the generated markers if FILE already has them)")
    bench.add_argument("--render", metavar="BENCH_JSON",
                       help="measure nothing: redraw --plot and --markdown (and the tables) from a bench.json")
    bench.add_argument("--json", action="store_true", help="print the whole run as one JSON document")
    bench.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    bench.set_defaults(handler=_bench)

    audit = commands.add_parser(
        "audit",
        help="check a transcript for what the server could have learnt",
        description="Run every check on a transcript written by `fedsecure simulate --transcript`: no client's "
        "self-mask seed and pairwise key both revealed, the graph and threshold within the threat model's bound, "
        "fresh public keys, ring headroom, share envelopes delivered only to their recipients. --leakage shows what "
        "a server reads from one client's update with and without secure aggregation. Exit status: 0 every check "
        "passed, 1 some check failed, 2 the file is not a valid transcript.",
    )
    audit.add_argument("transcript", nargs="?", help="a transcript file (JSON lines)")
    audit.add_argument("--leakage", action="store_true",
                       help="run the gradient-leakage attack on linear784 against plaintext, SecAgg and SecAgg+ "
                       "(needs the torch and examples extras)")
    audit.add_argument("--attack", choices=["all", "split-view", "key-substitution", "below-threshold", "replay",
                                            "redirect-shares", "sybils", "curious-key-holder", "paillier-replay",
                                            "threshold-split", "paillier-key-substitution"],
                       help="simulate an attack on client 0 (a malicious server, colluding clients, a curious key "
                       "holder), against the protective and a weakened configuration; 'all' runs every attack on "
                       "--protocol and, with the torch and examples extras, --leakage and --dp-audit too, and checks "
                       "a fresh simulated round if no transcript is given")
    audit.add_argument("--protocol", choices=["secagg", "secagg+", "paillier", "paillier-threshold"], default="secagg",
                       help="for --attack: SecAgg's attacks, or the Paillier arrangements' (512-bit keys for speed; "
                       "key size plays no part in them)")
    audit.add_argument("--clients", type=_count, default=10, help="clients in the attack and leakage rounds (default 10)")
    audit.add_argument("--dp-audit", action="store_true",
                       help="canary audit (one run) of central and distributed DP as calibrated, and of a central "
                       "mechanism with half the calibrated noise (needs the torch extra for Opacus' accountant)")
    audit.add_argument("--epsilon", type=float, default=2.0, help="claimed epsilon for --dp-audit (default 2)")
    audit.add_argument("--canaries", type=_count,
                       help="canaries for --dp-audit (default 30000 for central DP, 1000 for distributed)")
    audit.add_argument("--report", metavar="DIR", help="write report.md, audit.json and the plots here")
    audit.add_argument("--json", action="store_true", help="print the checks (and leakage) as one JSON object")
    audit.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    audit.set_defaults(handler=_audit)

    flower = commands.add_parser(
        "flower",
        help="run fedsecure on Flower's deployment engine: a SuperLink and SuperNodes as processes on this machine",
        description="Start a SuperLink and SuperNodes on loopback (insecure, local only), run the fedsecure Flower "
        "app, stop every process. Needs the flower extra (and torch, examples for training jobs). Exit status: "
        "0 done, 1 a wrong sum, 2 invalid arguments, 3 the run did not finish or every round aborted.",
    )
    flower.add_argument("--supernodes", type=_count, default=5, help="SuperNodes to start (default 5)")
    flower.add_argument("--job", default="simulate", metavar="JOB",
                        help="simulate (generated vectors checked against the plaintext sum), a built-in example to "
                        "train (linear784, cnn-digits, logistic), or your own package.module:function returning a "
                        "Federation or an Experiment (importable from the current directory or PYTHONPATH)")
    flower.add_argument("--fraction", type=float, default=1.0,
                        help="share of the clients in each round's cohort (default 1)")
    flower.add_argument("--checkpoint", metavar="DIR", help="save model, optimizer, history and ledger after each round")
    flower.add_argument("--resume", metavar="DIR", help="continue a training job from this checkpoint")
    flower.add_argument("--protocol", choices=sorted(_PROTOCOLS), default="secagg+",
                        help="paillier adds one SuperNode as the key holder; plaintext makes the clients allow it")
    flower.add_argument("--active", action="store_true",
                        help="SecAgg's active-adversary variant, with identity files written to WORKDIR/keys")
    flower.add_argument("--key-bits", type=int, default=2048, help="Paillier modulus size (default 2048)")
    flower.add_argument("--insecure-small-keys", action="store_true", help="allow Paillier keys below 2048 bits")
    flower.add_argument("--dp", choices=["central", "distributed", "local"], help="train with differential privacy")
    flower.add_argument("--epsilon", type=float, help="the DP budget over --rounds")
    flower.add_argument("--delta", type=float, default=1e-5)
    flower.add_argument("--rounds", type=_count, default=3)
    flower.add_argument("--dim", type=_count, default=10_000, help="vector length of the simulate job")
    flower.add_argument("--stage-timeout", type=float, default=20.0, help="each stage's deadline, s (default 20)")
    flower.add_argument("--start-timeout", type=float, default=90.0,
                        help="the first stage's deadline, which includes local training, s (default 90)")
    flower.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    flower.add_argument("--workdir", help="where logs and results go (default: a new temporary directory)")
    flower.add_argument("--app", help="the Flower app directory (default: examples/flower)")
    flower.add_argument("--transcript", metavar="FILE", help="write the audit transcript for `fedsecure audit`")
    flower.add_argument("--json", action="store_true", help="print one JSON object")
    flower.add_argument("--quiet", action="store_true", help="no progress on stderr")
    flower.set_defaults(handler=_flower)

    privacy = commands.add_parser(
        "privacy",
        help="compute epsilon for a noise multiplier, or the noise multiplier for a target epsilon",
        description="Privacy accounting and calibration. Exit status: 0 done, 2 invalid arguments.",
    )
    privacy.add_argument("--mechanism", choices=["gaussian", "ddgauss", "skellam"], default="gaussian")
    privacy.add_argument("--noise-multiplier", type=float, help="noise standard deviation / L2 sensitivity")
    privacy.add_argument("--target-epsilon", type=float, help="calibrate the noise for this epsilon")
    privacy.add_argument("--sample-rate", type=float, default=1.0,
                         help="Poisson sampling rate of the cohort, gaussian only (default 1: no amplification); "
                         "ddgauss and skellam take --population instead")
    privacy.add_argument("--rounds", type=_count, required=True, help="number of rounds (compositions)")
    privacy.add_argument("--delta", type=float, required=True)
    privacy.add_argument("--accountant", choices=["rdp", "prv"], default="rdp", help="for the gaussian (default rdp)")
    privacy.add_argument("--adjacency", choices=["zero-out", "replace-one"], default="zero-out",
                         help="one client's update zeroed, its noise share kept (central DP: add/remove of one "
                         "client), or replaced by any other, twice the sensitivity (default zero-out)")
    privacy.add_argument("--clients", type=_count, help="noise shares summed per round (ddgauss, skellam)")
    privacy.add_argument("--max-clients", type=_count, help="the most inputs a round may sum (default --clients)")
    privacy.add_argument("--population", type=_count,
                         help="population size: refuses delta >= 1/population; for ddgauss and skellam, the "
                         "population each cohort is drawn from without replacement (amplification against the "
                         "model's users; default: none)")
    privacy.add_argument("--bits", type=int, help="ring bits (ddgauss, skellam; default 20)")
    privacy.add_argument("--clip", type=float, help="L2 clip of each update (ddgauss, skellam)")
    privacy.add_argument("--dim", type=_count, help="update length (ddgauss, skellam; default 10000)")
    privacy.add_argument("--json", action="store_true", help="print one JSON object")
    privacy.set_defaults(handler=_privacy)
    return parser


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON's null), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _strict_json(value: Any, **options: Any) -> str:
    """Strict JSON, as every parser reads it: null where a number has no value (never NaN or Infinity)."""
    return json.dumps(_finite(value), allow_nan=False, **options)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedsecure`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        _check_outputs(args)
        return int(args.handler(args))
    except (FedSecureError, OSError) as error:
        # A refused input or an unreadable/unwritable path: one line, exit status 2, never a traceback.
        message = str(error) if isinstance(error, FedSecureError) else \
            f"{error.strerror or error}: {error.filename}" if error.filename else str(error)
        if getattr(args, "json", False):
            print(_strict_json({"error": type(error).__name__, "message": message}))
        else:
            print(f"fedsecure: {type(error).__name__}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
