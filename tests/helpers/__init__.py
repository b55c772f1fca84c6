"""Helpers shared by test modules: table builders, params writers, loopback servers, synthetic grids.

Test modules import them by module path (``from tests.helpers.traces import make_params``); conftest.py files
hold fixtures only, since ``from conftest import ...`` resolves to whichever conftest was imported last.
"""
