"""Test and demo infrastructure that ships with opsync.

It lives in the package (not under ``tests/``) because ``make run`` uses it too:
with no cluster configured, opsync starts a local control plane of its own.
"""
