"""The ``beam-phash`` command: ``python -m pipelines.dedup_images`` under a short name.

It begins what the job can start before Beam is imported (``early_start``), then imports the job.
"""
import sys


def main() -> int:
    from pipelines import early_start

    try:
        early_start.begin(sys.argv[1:])
        from pipelines import dedup_images
    except KeyboardInterrupt:  # while Beam is imported: one line, as dedup_images.main says it later
        from pipelines.console import open_console, say_interrupted

        say_interrupted(open_console(early_start.output_of(sys.argv[1:])))
        return 130  # no driver joined Ray yet: atexit stops its processes
    return dedup_images.main()


if __name__ == "__main__":
    sys.exit(main())
