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
        import logging

        from pipelines.console import close_console, open_console

        logging.getLogger(__name__).warning("interrupted", exc_info=True)
        con = open_console(early_start.output_of(sys.argv[1:]))
        con.tell(f"beam-phash: interrupted (details in {con.log_path})")
        close_console()
        return 130  # no driver joined Ray yet: atexit stops its processes
    return dedup_images.main()


if __name__ == "__main__":
    sys.exit(main())
