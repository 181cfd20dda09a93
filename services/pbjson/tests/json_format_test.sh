#!/usr/bin/env bash
# Runs the json_format cross-check with Debian's Python (which has protobuf).
exec /usr/bin/python3 services/pbjson/tests/json_format_test.py "$@"
