"""Helpers that start real, throwaway servers for the test suite."""
