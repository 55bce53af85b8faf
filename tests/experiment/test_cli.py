"""The command line: ``--help`` (every command, every default), usage errors naming the flag, the
resume line, Ctrl-C, one-line messages."""

import argparse
import importlib
import json
import shlex
import signal
import subprocess
import sys
import time

import pytest

from pipekit_cycle import ssh
from pipekit_cycle.experiment import available_tasks, build_parser, list_checkpoints, load_task


def test_help_lists_every_command(module_cli):
    result = module_cli(["--help"])
    assert result.returncode == 0, result.stderr
    assert "train, checkpoint and evaluate" in result.stdout
    assert "import-ocean4dvarnet" in result.stdout and "ocean4dvarnet checkpoint" in result.stdout


def _flag_helps(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.option_strings[-1]: action for action in parser._actions if action.option_strings}


def _train_parser() -> argparse.ArgumentParser:
    commands = next(action for action in build_parser("x")._actions if action.dest == "command")
    return commands.choices["train"]


@pytest.mark.parametrize("command", ["train", "import-ocean4dvarnet"])
def test_every_flag_shows_its_default(command):
    if command == "train":
        parser = _train_parser()
    else:
        parser = importlib.import_module("vardax_torch.__main__").import_parser()
    for flag, action in _flag_helps(parser).items():
        if action.nargs == 0:
            continue  # --help and the switches: off unless given
        words = "required" if action.required else "default"
        assert words in (action.help or ""), f"{command} {flag}: {action.help!r}"


def test_train_help_gives_each_systems_defaults():
    helps = {flag: action.help for flag, action in _flag_helps(_train_parser()).items()}
    for name in available_tasks():
        task = load_task(name)
        for field, value in task.defaults.items():
            text = helps["--" + field.replace("_", "-")]
            assert f"{value} for {name}" in text or text.endswith(f"default: {value}"), (name, field, text)


@pytest.mark.parametrize(
    ("argv", "flag", "allowed"),
    [
        (["--steps", "-1"], "--steps", "integer >= 1"),
        (["--adjoint", "backsolve"], "--adjoint", "allowed here: checkpoint, truncated"),
        (["--batch-size", "1000"], "--batch-size", "at most the number of training windows (512)"),
    ],
)
def test_invalid_flag_is_a_one_line_usage_error(tmp_path, module_cli, argv, flag, allowed):
    out = tmp_path / "run"
    result = module_cli(["train", *argv, "--out", str(out)])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"argument {flag}:" in result.stderr and allowed in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--steps", "0"], "--steps"),
        (["--steps", "abc"], "--steps"),
        (["--system", "l99"], "--system"),
        (["--adjoint", "direct"], "--adjoint"),
        (["--adjoint", "bogus"], "--adjoint"),
        (["--adjoint", "truncated:0"], "--adjoint"),
        (["--adjoint", "checkpoint:0"], "--adjoint"),
        (["--solver-steps", "0"], "--solver-steps"),
        (["--lr", "-0.1"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--seed", "-1"], "--seed"),
        (["--train-windows", "1"], "--batch-size"),
        (["--test-windows", "0"], "--test-windows"),
        (["--window-length", "0"], "--window-length"),
        (["--hidden-dim", "0"], "--hidden-dim"),
        (["--prior-hidden-dim", "-2"], "--prior-hidden-dim"),
        (["--checkpoint-every", "0"], "--checkpoint-every"),
        (["--fourdvar-windows", "-1"], "--fourdvar-windows"),
        (["--resume", "--overwrite"], "--overwrite"),
    ],
)
def test_every_invalid_flag_value_is_a_usage_error(tmp_path, cli, argv, flag):
    out = tmp_path / "run"
    status, err = cli(["train", *argv, "--out", str(out)])
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("python -m vardax_torch train: error: ")
    assert flag in err
    assert not out.exists()


def test_out_that_is_a_file_is_a_usage_error(tmp_path, cli, tiny_flags):
    (tmp_path / "file").write_text("x")
    status, err = cli(["train", *tiny_flags(), "--out", str(tmp_path / "file")])
    assert status == 2 and "--out" in err and "not a directory" in err


RUN_WITH_CTRL_C = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('vardax_torch', run_name='__main__', alter_sys=True)"
)


def test_ctrl_c_names_the_last_checkpoint_and_the_resume_command(tmp_path, tiny_flags):
    out = tmp_path / "run"
    argv = ["train", *tiny_flags(steps=1_000_000, checkpoint_every=3), "--out", str(out), "--no-progress"]
    # Python's Ctrl-C handler set explicitly: a suite started in the background by a
    # non-interactive shell passes SIGINT on ignored, and Python then installs none itself (a
    # preexec_fn would fork a process that runs JAX's threads).
    child = subprocess.Popen([sys.executable, "-c", RUN_WITH_CTRL_C, *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list_checkpoints(out) and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert list_checkpoints(out), "no checkpoint was written"
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=300)  # a ceiling: the load on 2 shared cores varies
    finally:
        child.kill()
    assert child.returncode == 130
    assert err.count("\n") == 1 and "Traceback" not in err
    step, directory = list_checkpoints(out)[-1]
    assert f"the last checkpoint is {directory} (step {step} of 1000000)" in err
    command = err.strip().split("resume with: ", 1)[1]
    assert command == shlex.join(["python", "-m", "vardax_torch", *argv, "--resume"])
    args = build_parser("x").parse_args(shlex.split(command)[3:])
    assert args.resume and args.out == str(out)


def test_no_readable_checkpoint_is_one_line_exit_1(tmp_path, cli, tiny_flags):
    out = tmp_path / "run"
    assert cli(["train", *tiny_flags(), "--out", str(out), "--no-progress", "--no-figures"])[0] == 0
    for _, directory in list_checkpoints(out):
        (directory / "state.json").write_text("{not json")
    status, err = cli(["train", *tiny_flags(), "--out", str(out), "--resume", "--no-progress", "--no-figures"])
    assert status == 1 and err.count("\n") == 1
    assert "step-000002/state.json: not valid JSON" in err and "step-000004/state.json: not valid JSON" in err


def test_fallback_warning_is_one_line_at_the_cli(tmp_path, cli, tiny_flags, capsys):
    out = tmp_path / "run"
    assert cli(["train", *tiny_flags(), "--out", str(out), "--no-progress", "--no-figures"])[0] == 0
    latest = list_checkpoints(out)[-1][1]
    (latest / "optimizer.safetensors").write_bytes(b"\x00" * 20)
    status, err = cli(["train", *tiny_flags(), "--out", str(out), "--resume", "--no-progress", "--no-figures"])
    assert status == 0
    warning, resumed = err.splitlines()
    assert warning.startswith("warning: ") and resumed == f"resuming {out} from step 2; continuing to step 4"
    assert f"{latest}/optimizer.safetensors: not a readable safetensors file" in warning
    assert "resuming from the previous checkpoint" in warning
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4


def test_ctrl_c_during_the_evaluation(tmp_path, cli, tiny_flags, monkeypatch):
    import pipekit_cycle.experiment.lorenz as lorenz

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lorenz, "_predict", interrupted)
    out = tmp_path / "run"
    status, err = cli(["train", *tiny_flags(), "--out", str(out), "--no-progress", "--no-figures", "--overwrite"])
    assert status == 130 and err.count("\n") == 1
    assert f"the last checkpoint is {out / 'checkpoints' / 'step-000004'} (step 4 of 4)" in err
    assert err.rstrip().endswith(f"--out {out} --no-progress --no-figures --resume")  # --overwrite dropped
    assert not (out / "metrics.json").exists()


def test_a_resume_says_the_step_it_continues_from(tmp_path, cli, tiny_flags):
    out = tmp_path / "run"
    quiet = ["--out", str(out), "--no-progress", "--no-figures"]
    assert cli(["train", *tiny_flags(steps=2), *quiet]) == (0, "")
    status, err = cli(["train", *tiny_flags(), *quiet, "--resume"])
    assert status == 0 and err == f"resuming {out} from step 2; continuing to step 4\n"
    status, err = cli(["train", *tiny_flags(), *quiet, "--resume"])
    assert status == 0 and err == f"resuming {out} from step 4; evaluating it again\n"


def test_an_error_caused_by_a_default_names_it_as_such(tmp_path, cli, tiny_flags):
    status, err = cli(["train", *tiny_flags(), "--train-windows", "1", "--out", str(tmp_path / "run")])
    assert status == 2 and err.count("\n") == 1
    # tiny_flags gives --batch-size 2: the flag was given, so no word about its default.
    assert "argument --batch-size: must be at most the number of training windows (1), got 2" in err
    assert "not given" not in err
    argv = tiny_flags()
    del argv[argv.index("--batch-size"):argv.index("--batch-size") + 2]
    status, err = cli(["train", *argv, "--train-windows", "1", "--out", str(tmp_path / "run")])
    assert status == 2 and err.count("\n") == 1
    assert err.rstrip().endswith("got 8 (--batch-size was not given: its default for --system l96, 8, applies; pass "
                                 "--batch-size to change it)")


@pytest.mark.parametrize(
    ("given", "words"),
    [
        # The case: a 10-day file and the default 60 held-out days.
        ([], "holds 10 days, too few to hold out 60 and train on one window (--window-length 15) before them "
             "(--test-days was not given: its default for --system ssh, 60, applies"),
        (["--test-days", "8", "--window-length", "4"], "holds 10 days, too few to hold out 8 and train on one "
                                                       "window (--window-length 4) before them"),
    ],
)
def test_a_short_data_file_blames_the_held_out_days(tmp_path, cli, given, words):
    file = tmp_path / "ten.nc"
    ssh.write_netcdf(file, ssh.simulated(n_days=10, grid=32, seed=0), {})
    out = tmp_path / "run"
    status, err = cli(["train", "--system", "ssh", "--data", str(file), "--var", "truth", "--obs-var", "obs",
                       *given, "--out", str(out), "--no-progress"])
    assert status == 2 and err.count("\n") == 1, err
    assert f"argument --test-days: {file} {words}" in err
    assert "--train-days" not in err and "-50" not in err
    assert ("not given" in err) == (not given)
    assert not out.exists()
