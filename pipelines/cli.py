"""The ``beam-phash`` command: ``python -m pipelines.dedup_images`` under a short name.

It begins what the job can start before Beam is imported (``early_start``), then imports the job.
"""
import sys


def main() -> int:
    from pipelines import early_start

    early_start.begin(sys.argv[1:])
    from pipelines import dedup_images

    return dedup_images.main()


if __name__ == "__main__":
    sys.exit(main())
