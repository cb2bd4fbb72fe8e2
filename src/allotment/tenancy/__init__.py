"""Tenants, API keys and their scopes."""
