# Builds the OCI image layouts that imagefs' integration tests and benchmarks pull from a
# local registry; see tests/fixtures/README.md for what each image holds.
