"""Entry points: HTTP and CloudEvents adapters for the functions, the CLI, `holdfast dev`."""
