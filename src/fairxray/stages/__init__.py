"""One module per CLI command / DVC stage, each a thin ``main(argv) -> int``."""
