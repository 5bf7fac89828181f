"""Setuptools hook (configuration lives in pyproject.toml): ship the top-level ``resources/`` folder
inside the package as ``rlm_desktop/resources`` so icons and samples reach wheels and bundles."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithResources(build_py):
    """build_py that also copies resources/ (icons, samples) into the built package."""

    def run(self) -> None:
        super().run()
        src = HERE / "resources"
        dest = Path(self.build_lib) / "rlm_desktop" / "resources"
        for f in sorted(src.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                target = dest / f.relative_to(src)
                self.mkpath(str(target.parent))
                self.copy_file(str(f), str(target))


setup(cmdclass={"build_py": BuildPyWithResources})
