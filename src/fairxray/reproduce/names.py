"""The names the CLI reads before anything heavy is imported (``--help`` stays instant): the
environment variables that give ``reproduce``/``demo`` their defaults (the Dockerfile sets them to
the mount points the README's `docker run` lines use) and NIH's metadata file name."""

ENV_IMAGES_DIR = "FAIRXRAY_IMAGES_DIR"
ENV_WEIGHTS_DIR = "FAIRXRAY_WEIGHTS_DIR"
ENV_METADATA = "FAIRXRAY_METADATA"
ENV_OUT = "FAIRXRAY_OUT"

METADATA_NAME = "Data_Entry_2017_v2020.csv"  # the name NIH distributes next to the image folders
