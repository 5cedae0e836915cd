"""`python -m retrieval.proto`: generate the gRPC stubs (`make setup` runs this)."""

from retrieval.proto import HERE, generate

generate()
print(f"generated gRPC stubs in {HERE}")
