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
        from pipelines.console import close_console, open_console

        con = open_console(early_start.output_of(sys.argv[1:]))
        try:
            from pipelines.dedup_images import interrupted
        except BaseException:  # noqa: BLE001 - the import itself was what Ctrl-C cut short
            con.tell("beam-phash: interrupted")
            close_console()
            return 130
        code = interrupted(con)
        close_console()
        return code
    return dedup_images.main()


if __name__ == "__main__":
    sys.exit(main())
