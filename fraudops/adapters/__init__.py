"""Code that leans on a third party's internals, one module per library, each pinned by a
test to the library it mimics and naming the version it was written against."""
