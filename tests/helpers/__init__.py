"""Clients and helpers the tests share: real protocol peers written for the tests."""
