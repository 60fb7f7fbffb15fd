"""The job's terminal: its own lines only, the rest in OUTPUT/logs/job.log, progress from the
workers, and every failure in one line."""
import io
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import time

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines import early_start
from pipelines.console import Console
from pipelines.dedup_images import TRACEBACK, one_line
from pipelines.progress import ProgressBoard, ProgressDoFn
from conftest import ROOT
from processes import left_in_session, processes_of



def test_the_console_sends_fd_output_and_logging_to_the_log_and_gives_the_terminal_back(tmp_path):
    """Run in a child process, whose fds 1 and 2 are pipes we read: what a library or a child
    process writes to them goes to the log, the job's own lines to the terminal."""
    script = f"""
import logging, os, subprocess, sys
from pipelines.console import Console
con = Console({str(tmp_path / 'out')!r}).open()
logging.getLogger("chatty").warning("a library warning")
os.write(2, b"written to fd 2\\n")
subprocess.run([sys.executable, "-c", "print('a child process')"])
con.say("our result line")
con.tell("beam-phash: our note")
con.close()
print("after close")
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["our result line", "after close"]
    assert proc.stderr.splitlines() == ["beam-phash: our note"]
    log = (tmp_path / "out" / "logs" / "job.log").read_text()
    for chatter in ("a library warning", "written to fd 2", "a child process"):
        assert chatter in log


def test_the_console_without_real_fds_still_logs_to_the_file(tmp_path, capsys):
    con = Console(str(tmp_path)).open()
    logging.getLogger("chatty").warning("to the file")
    con.say("result")
    con.close()
    assert capsys.readouterr().out == "result\n"
    assert "to the file" in (tmp_path / "logs" / "job.log").read_text()


def test_an_empty_log_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    """A run refused before anything was logged leaves no empty log, and no folder made for it;
    a folder that was there, or that holds something else, stays."""
    out = tmp_path / "new" / "out"
    con = Console(str(out)).open()
    con.tell("beam-phash: error: refused")
    con.close()
    assert not (tmp_path / "new").exists()

    (tmp_path / "had").mkdir()
    Console(str(tmp_path / "had")).open().close()
    assert list((tmp_path / "had").iterdir()) == []
    (tmp_path / "had" / "logs").mkdir()
    Console(str(tmp_path / "had")).open().close()
    assert [p.name for p in (tmp_path / "had").iterdir()] == ["logs"]

    monkeypatch.chdir(tmp_path)
    con = Console("relative/out").open()
    monkeypatch.chdir("/")
    con.close()
    assert not (tmp_path / "relative").exists()

    kept = tmp_path / "kept"
    con = Console(str(kept)).open()
    (kept / "report.html").write_text("written by the job")
    con.close()
    assert sorted(p.name for p in kept.iterdir()) == ["report.html"]

    # An output that cannot be written, or a remote one: the log went to a temporary folder.
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    for output in ("/proc/forbidden", "gs://bucket/out"):
        Console(output).open().close()
    assert list((tmp_path / "tmp").iterdir()) == []
    con = Console("gs://bucket/out").open()
    logging.getLogger("chatty").warning("kept")
    con.close()
    assert "kept" in pathlib.Path(con.log_path).read_text()


def test_a_run_closing_with_an_empty_log_keeps_the_log_another_run_has_open(tmp_path):
    """Two runs on one output: the first to close, its log still empty, leaves the log the other
    run has open (removed, it would have taken the other run's lines with it); the last to close
    an empty log removes it."""
    other = f"""
import logging, sys
from pipelines.console import Console
con = Console({str(tmp_path / 'out')!r}).open()
print("open", file=con.out, flush=True)
if sys.stdin.readline().strip() == "log":
    logging.getLogger("other").warning("the other run's line")
con.close()
"""

    def run_beside(then: str) -> None:
        proc = subprocess.Popen([sys.executable, "-c", other], cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "open", proc.stderr.read()
        con = Console(str(tmp_path / "out")).open()
        con.close()
        log = pathlib.Path(con.log_path)
        assert log.exists()  # the other run has it open
        proc.communicate(then + "\n", timeout=60)
        assert proc.returncode == 0

    run_beside("log")
    assert "the other run's line" in (tmp_path / "out" / "logs" / "job.log").read_text()
    shutil.rmtree(tmp_path / "out")
    run_beside("quiet")  # the other run, last to close an empty log, removes it
    assert not (tmp_path / "out").exists()


def test_progress_counts_every_record_a_pipeline_read():
    stream = io.StringIO()
    board = ProgressBoard(stream, total=300)
    with TestPipeline() as p:
        _ = p | beam.Create(range(300)) | beam.ParDo(ProgressDoFn(board.address, every_seconds=0.01))
    deadline = time.monotonic() + 10
    while board.count < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    board.close()
    assert board.count == 300
    assert "300/300 records" in board.line() and "[########################]" in board.line()


def test_closing_the_board_wakes_its_listener():
    """close() does not wait for the listener's receive to time out: the job's end waited for it."""
    import threading

    board = ProgressBoard(io.StringIO())
    board._socket.settimeout(60)  # from the next receive on, only the wake-up can end it
    time.sleep(0.5)
    closer = threading.Thread(target=board.close)
    closer.start()
    closer.join(10)
    assert not closer.is_alive()


def test_the_progress_line_has_a_rate_and_an_eta():
    board = ProgressBoard(io.StringIO(), total=1000)
    board._counts = {b"a": 150, b"b": 100}
    board._first, board._latest = 0.0, 5.0
    line = board.line(now=5.0)
    assert board.line(now=60.0) == line  # the rate is that of the counts, not of the wait after them
    board.close()
    assert "250/1,000 records" in line and "50 images/s" in line and "ETA 15 s" in line
    unknown = ProgressBoard(io.StringIO())
    unknown._counts = {b"a": 10}
    assert "10 records" in unknown.line() and "ETA" not in unknown.line()
    unknown.close()


def test_errors_are_one_line():
    e = RuntimeError("bucket 2 of dedup backend 'x' failed: ActorDiedError: gone\n\tclass_name: B "
                     "[while running 'ImagePhashDedup/Exact']")
    assert one_line(e) == "RuntimeError: bucket 2 of dedup backend 'x' failed: ActorDiedError: gone"
    assert one_line(ValueError("x" * 1000)).endswith("...") and len(one_line(ValueError("x" * 1000))) == 400
    assert one_line(KeyError()) == "KeyError"
    # An error quoted in parentheses over several lines (pyarrow's): said whole, with what
    # follows it; the line ended at the first line break, its parenthesis open.
    e = RuntimeError("state segment /s/p.parquet is missing or unreadable (Couldn't deserialize thrift: "
                     "TProtocolException: Invalid data\nDeserializing page header failed.\n); the state "
                     "in /s is damaged: restore it [while running 'Near/Search']\nmore details")
    assert one_line(e) == ("RuntimeError: state segment /s/p.parquet is missing or unreadable (Couldn't "
                           "deserialize thrift: TProtocolException: Invalid data Deserializing page header "
                           "failed. ); the state in /s is damaged: restore it")
    # A worker's traceback passed on by a portable runner: the exception it ends with.
    e = RuntimeError("Pipeline failed: Error received from SDK harness for instruction 4: " + TRACEBACK +
                     "\n  File \"a.py\", line 1, in f\n    g()\nValueError: boom (bucket 3)\n"
                     " [while running 'Hash']\n\tat org.apache.beam.Foo(Foo.java:1)")
    assert one_line(e) == "RuntimeError: ValueError: boom (bucket 3)"
    # Brackets that never close (a '(' in a quoted name): the first line alone, as before.
    e = RuntimeError("cannot read /data/IMG (2.jpg: truncated" + "\n\tat org.apache.beam.Foo(Foo.java:1)" * 30)
    assert one_line(e) == "RuntimeError: cannot read /data/IMG (2.jpg: truncated"


@pytest.mark.parametrize("argv, needed", [
    ([], True),
    (["--backend", "ray", "--output", "o"], True),
    (["--backend", "state"], False),
    (["--ray-address", "auto"], False),
    (["--max-distance", "auto"], False),
    (["--max-distance", "0"], True),
    (["--dihedral"], False),
    (["--runner", "FlinkRunner"], False),
    (["--help"], False),
])
def test_the_embedded_ray_is_started_early_only_when_the_run_needs_it(argv, needed):
    assert early_start.needs_embedded_ray(argv) == needed


@pytest.mark.parametrize("flag", ["--help", "-h", "--hel"])
def test_help_reaches_the_terminal_and_writes_no_output(tmp_path, flag):
    """Help is printed before the console opens: once open, stdout would be the job's log."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pipelines.dedup_images", flag, "--max-distance", "auto"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--max-distance" in proc.stdout and "--reference-format" in proc.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("refusal", [["--hash-size", "abc"], ["--backend", "state", "--num-buckets", "8"]])
def test_a_refused_command_leaves_no_folder_and_an_earlier_log_as_it_was(tmp_path, refusal):
    """What Beam and Ray print while a command starts (it imports Beam, starts the embedded Ray
    early) is the refused run's own: taken out of the log, which a new output then does not keep;
    an earlier run's log on the same output keeps its lines, and only those."""
    def refused(out):
        proc = subprocess.run([sys.executable, "-m", "pipelines.dedup_images", "--output", str(out), *refusal],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and proc.stderr.startswith("beam-phash: error: "), proc.stderr

    refused(tmp_path / "new" / "out")
    assert not (tmp_path / "new").exists()
    earlier = tmp_path / "had" / "logs" / "job.log"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("an earlier run's line\n")
    refused(tmp_path / "had")
    assert earlier.read_text() == "an earlier run's line\n"


def test_a_failure_in_the_run_is_one_line_naming_the_log(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipelines.dedup_images", "--output", str(out),
                           "--backend", "state", "--max-decode-failures", "0.01"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("beam-phash: error: ") and "over the failure threshold" in lines[-1]
    assert all(line.startswith("beam-phash: ") for line in lines), proc.stderr
    assert "Traceback" in (out / "logs" / "job.log").read_text()
    assert os.path.exists(out / "logs" / "job.log")


@pytest.mark.parametrize("gone", ["stdout", "both"])
def test_a_reader_that_goes_away_does_not_end_the_run(tmp_path, gone):
    """`beam-phash ... | head -0` (and `2>&1 | head -0`): the summary line meets a closed pipe;
    the run still ends with its own exit code, its outputs and its summary, no traceback."""
    out = tmp_path / "out"
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the job writes anything
    try:
        proc = subprocess.run([sys.executable, "-m", "pipelines.dedup_images", "--output", str(out),
                               "--backend", "state"], cwd=ROOT, stdout=write_end,
                              stderr=write_end if gone == "both" else subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "summary.json").read_text())["adds_up"]
    assert "Traceback" not in (out / "logs" / "job.log").read_text()
    if gone == "stdout":
        assert proc.stderr.startswith("beam-phash: 16 files") and "Error" not in proc.stderr, proc.stderr


@pytest.mark.ray
def test_a_fresh_job_starts_ray_early_and_its_worker_processes_wait_for_it(tmp_path):
    """The command line begins Ray's start before Beam's import and builds the pipeline without
    waiting for it; Beam's worker processes then connect to a head that may still be starting.
    Ray's chatter stays in the log, and nothing of that Ray outlives the job."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipelines.dedup_images", "--output", str(out),
                           "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(adds up)" in proc.stdout
    assert all(line.startswith("beam-phash: ") for line in proc.stderr.splitlines()), proc.stderr
    log = (out / "logs" / "job.log").read_text()
    assert "embedded Ray head up at 127.0.0.1:" in log
    session = [w for w in log.split() if "/session_" in w]
    assert session, "Ray's session directory is not named in the log"
    name = session[0].split("/session_")[1].split("/")[0].rstrip(")")
    time.sleep(1)
    left = processes_of("session_" + name)
    assert not left, left


def test_ctrl_c_before_the_job_is_imported_waits_for_the_step_it_lands_in(tmp_path):
    """A Ctrl-C while the command starts (the console, the embedded Ray's start, Beam's import) is
    acted on between those steps, never raised inside one: raised inside an import it could leave
    Python's import lock held while the thread starting Ray forked, and the job hung."""
    script = f"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as on a terminal, whatever started us
from pipelines import cli, early_start
done = []
def begin(argv):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
    done.append(argv)
early_start.begin = begin
sys.argv = ["beam-phash", "--output", {str(tmp_path / 'out')!r}]
code = cli.main()
print(code, len(done), "pipelines.dedup_images" in sys.modules, signal.getsignal(signal.SIGINT) is signal.default_int_handler)
# A later call in the same process starts afresh: the earlier press is not held against it.
from pipelines import dedup_images
dedup_images.main = lambda **held: 7
early_start.begin = done.append
print(cli.main(), len(done))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["130", "1", "False", "True", "7", "2"], (proc.stdout, proc.stderr)
    assert proc.stderr.strip().startswith("beam-phash: interrupted") and "Traceback" not in proc.stderr
    # Started with SIGINT ignored (nohup), the command keeps ignoring it.
    ignored = script.replace("signal.default_int_handler)  #", "signal.SIG_IGN)  #").replace(
        "code = cli.main()", "from pipelines import dedup_images\ndedup_images.main = lambda **held: 7\ncode = cli.main()").replace(
        "is signal.default_int_handler)", "is signal.SIG_IGN)")
    proc = subprocess.run([sys.executable, "-c", ignored], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["7", "1", "True", "True", "7", "2"], (proc.stdout, proc.stderr)


def _command_patched(tmp_path, patch: str, more: tuple = ()) -> subprocess.CompletedProcess:
    """The command (``cli.run``) on a folder of one test photo (and the arguments ``more``),
    with Python's Ctrl-C handler as on a terminal and ``patch`` (code run after ``from pipelines
    import cli, console``) in force."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(sorted((ROOT / "tests" / "data").glob("*.jpg"))[0], inputs)
    script = f"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as on a terminal, whatever started us
from pipelines import cli, console
{patch}
sys.argv = ["beam-phash", "--input", {str(inputs)!r}, "--output", {str(tmp_path / 'out')!r}, "--backend", "state", *{list(more)!r}]
cli.run()
"""
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ctrl_c_as_the_job_takes_over_from_the_command_is_one_line_and_exit_130(tmp_path):
    """A Ctrl-C after the job is imported but before it is inside its own Ctrl-C handling (it
    opens its console, parsing the arguments again) is held until then and acted on as one in
    the run: one line, exit 130, no traceback. Raised there, it ended the job (by SIGINT, or exit
    1 in the test below, once, at 1.5 s), the traceback in the log and not a line on the terminal."""
    proc = _command_patched(tmp_path, """
opened, calls = console.open_console, []
def open_console(output):
    con = opened(output)
    calls.append(output)
    if len(calls) == 2:  # the job's own, after the command's (early_start.begin)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
    return con
console.open_console = open_console""")
    assert proc.returncode == 130, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("beam-phash: interrupted"), proc.stderr
    assert not (tmp_path / "out" / "summary.json").exists()  # the press stopped the run


@pytest.mark.parametrize("pressed", ["as the command starts", "as the job takes over"])
def test_ctrl_c_while_help_starts_is_one_line_and_exit_130(tmp_path, pressed):
    """A Ctrl-C while ``--help`` starts ends the command as it ends a run (exit 130, one line),
    writing nothing under the output. Before, a press as the job took over was swallowed (the
    help, exit 0), and one as the command started opened a log under the output to name it."""
    patch = {
        "as the command starts": """
from pipelines import early_start
def begin(argv):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
early_start.begin = begin""",
        "as the job takes over": """
from pipelines import early_start
began = early_start.begin
def begin(argv):
    began(argv)
    from pipelines import dedup_images  # where the command imports it: after the start
    job = dedup_images.main
    def main(**held):
        os.kill(os.getpid(), signal.SIGINT)  # noted by the command's handler, into its held presses
        time.sleep(0.2)
        return job(**held)
    dedup_images.main = main
early_start.begin = begin""",
    }[pressed]
    proc = _command_patched(tmp_path, patch, ("--help",))
    assert proc.returncode == 130, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.splitlines() == ["beam-phash: interrupted"], proc.stderr
    assert "--max-distance" not in proc.stdout
    assert not (tmp_path / "out").exists()


def test_ctrl_c_as_the_command_exits_after_its_run_is_ignored(tmp_path):
    """A Ctrl-C after the run and its stops are over (as the console closes) cuts nothing short:
    the command exits with the run's code and its lines, without a traceback. Raised there, it
    ended the command by SIGINT instead (-2 here), after a run that had succeeded."""
    proc = _command_patched(tmp_path, """
closing = console.Console.close
def close(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
    return closing(self, *args, **kwargs)
console.Console.close = close""")
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "(adds up)" in proc.stdout and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr)


@pytest.mark.ray
@pytest.mark.parametrize("after", [0.3, 1.5, 3.0])
def test_ctrl_c_is_one_line_and_exit_130_at_any_point(tmp_path, after):
    """Ctrl-C while Beam is imported, while the embedded Ray starts or while the job runs: one
    line, exit 130, no traceback (the traceback goes to the log), and no process of the embedded
    Ray left behind. A job that had finished by then exits as usual."""
    import signal

    inputs = tmp_path / "in"
    inputs.mkdir()
    photos = sorted((ROOT / "tests" / "data").glob("*.jpg"))
    for i in range(1500):
        (inputs / f"{i:05d}.jpg").write_bytes(photos[i % len(photos)].read_bytes())
    # As from a terminal, whatever started the tests (a background job ignores SIGINT), and in a
    # session of its own: every process the job starts is in it (Ray's retitle themselves).
    terminal = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                "os.execv(sys.executable, [sys.executable, '-m', 'pipelines.cli', *sys.argv[1:]])")
    proc = subprocess.Popen([sys.executable, "-c", terminal, "--input", str(inputs), "--output", str(tmp_path / "out")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert "Traceback" not in err and all(line.startswith("beam-phash: ") for line in err.splitlines()), err
    if proc.returncode == 130:
        assert err.splitlines()[-1].startswith("beam-phash: interrupted"), err
    else:
        assert proc.returncode == 0 and "(adds up)" in out, (proc.returncode, err)
    # Nothing of the embedded Ray outlives the job (its agents, left alone, stayed a minute).
    left = left_in_session(proc.pid)
    assert not left, left
