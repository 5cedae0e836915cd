"""Build hook: generate the gRPC stubs from retrieval/proto/*.proto with grpcio-tools at build time.

All project metadata lives in pyproject.toml; this file only adds the protoc step to build_py.
"""

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithProtos(build_py):
    def run(self) -> None:
        try:
            from retrieval.proto import generate

            generate()
        except ImportError as e:  # grpcio-tools missing from the build environment
            self.announce(f"gRPC stubs not generated at build time ({e}); they are generated on first use",
                          level=3)
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})
