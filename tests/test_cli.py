"""The freecg-md command line."""

import subprocess
import sys

import pytest

from freecg_md.cli import SUBCOMMANDS, main


def test_help_lists_every_subcommand_and_exits_0(capsys):
    assert main(["--help"]) == 0
    printed = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"  {name} " in printed


def test_the_installed_command_answers_help():
    done = subprocess.run([sys.executable, "-m", "freecg_md.cli", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "train" in done.stdout


@pytest.mark.parametrize("argv", [[], ["frobnicate"]])
def test_no_or_an_unknown_subcommand_is_refused(argv, capsys):
    assert main(argv) == 2
    assert "usage: freecg-md" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_its_own_help(name, capsys):
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    assert stop.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_the_command_line_loads_without_torch():
    """OMP_WAIT_POLICY is set before torch (and libgomp) load; --help needs no torch."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, os; import freecg_md.cli; "
         "print('torch' in sys.modules, os.environ['OMP_WAIT_POLICY'])"],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "PASSIVE"]


def test_a_subcommand_names_itself_in_its_usage(capsys):
    saved = list(sys.argv)
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    assert "usage: freecg-md plot" in capsys.readouterr().out
    assert sys.argv == saved


@pytest.mark.parametrize("argv,named", [
    (["remd", "--report-interval", "0", "--steps", "2", "--no-plots"], "report_interval"),
    (["remd", "--temperatures", "400", "300", "--steps", "2", "--no-plots"], "--temperatures"),
    (["remd", "--replicas", "0", "--steps", "2", "--no-plots"], "--replicas"),
    (["langevin", "--trajectories", "0", "--steps", "2"], "--trajectories 0"),
    (["langevin", "--report-interval", "0", "--steps", "2"], "report_interval"),
])
def test_bad_engine_settings_end_with_one_line_naming_them(argv, named, tmp_path, capsys):
    """Refused before any MD, with exit status 2 and the setting named (not a traceback)."""
    assert main([*argv, "--output", str(tmp_path / "run")]) == 2
    assert named in capsys.readouterr().err
