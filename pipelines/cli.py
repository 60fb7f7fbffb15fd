"""The ``beam-phash`` command: ``python -m pipelines.dedup_images`` under a short name.

It begins what the job can start before Beam is imported (``early_start``), then imports the job.

Until the job is imported, Ctrl-C is noted and acted on between the steps (opening the console,
beginning the embedded Ray's start, importing the job: a second or so), never raised inside one;
then it stays noted until the job has its console and can say "interrupted".
Meanwhile a thread may be starting the embedded Ray, which forks; a KeyboardInterrupt raised
between an import's taking and releasing of Python's import lock left that lock held, and the
fork then waited for it forever, and the job with it.
"""
import atexit
import logging
import os
import signal
import sys


def main() -> int:
    pressed = []  # Ctrl-C presses noted while the job is imported, this call's own

    def note(signum, frame):  # noqa: ARG001 - a signal handler's signature
        pressed.append(signum)

    # Only Python's own Ctrl-C is deferred: a job started with SIGINT ignored (nohup, a background
    # job of a script) keeps ignoring it.
    deferring = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if deferring:
        signal.signal(signal.SIGINT, note)
    try:
        from pipelines import early_start

        early_start.begin(sys.argv[1:])
        if not pressed:
            from pipelines import dedup_images
        if pressed and early_start.wants_help(sys.argv[1:]):  # no console, no Ray to stop
            from pipelines.console import say_interrupted_before_help

            say_interrupted_before_help()
            return 130
        if pressed:  # one line, as dedup_images.main says it later
            from pipelines.console import open_console, say_interrupted

            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second press does not cut the stop short
            # The embedded Ray, perhaps still starting, is stopped while its output goes to the log.
            say_interrupted(open_console(early_start.output_of(sys.argv[1:])), stop=early_start.stop_ray_before_exit)
            if early_start.loaded_ray_cluster() is not None:
                # A thread may still be in Ray's start: end now, as the job does after a Ctrl-C,
                # rather than run the interpreter's exit beside it with the terminal given back.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(130)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            return 130
        # Presses are still only noted until the job is inside its own Ctrl-C handling
        # (``dedup_images.main``'s ``held``): one landing in between (it parses the arguments
        # again, to find its console) ended the job by SIGINT, its traceback in the log and no line.
        return dedup_images.main(held=pressed if deferring else None)
    finally:
        # Python's own handler back, unless the job or the stop above set another meanwhile.
        if deferring and signal.getsignal(signal.SIGINT) is note:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def run() -> None:
    """The command: :func:`main`, then Python's exit handlers (those left: the job runs Beam's
    stop of a Flink job server and Ray's shutdown itself, while its output still goes to the
    log), then the process ends with its exit code, its output flushed.
    Not through the rest of the interpreter's exit: there Arrow's thread pools, torn down beside
    a worker thread still alive, can abort a finished run ("terminate called without an active
    exception", exit -6; apache/arrow#34314; seen once in a test's run of the command here)."""
    code = main()
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
