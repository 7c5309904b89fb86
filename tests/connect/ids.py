"""Readable, valid 26-character Connect ids for test data."""


def oid(stem: str) -> str:
    """``stem`` padded with zeros to a 26-character lowercase id ending in 1."""
    return (stem + "0" * 26)[:25] + "1"
