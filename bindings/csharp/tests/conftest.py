"""Fixtures of the C# host tests (defined in csharp_hosts.py, which the tests import too)."""

from csharp_hosts import clr_host, python_host  # noqa: F401
