"""``python -m denoising_diffusion``: the same command line as the ``denoising-diffusion`` entry point."""

from denoising_diffusion.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
