"""Helpers and builders the tests share: the test stack's keys and names, configs for the
gateway, records made by hand, and the functions' handler modules. Test modules import from
here, never from conftest.py or from one another."""
