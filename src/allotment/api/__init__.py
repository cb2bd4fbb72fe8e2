"""The HTTP surface: app factory, dependencies, error mapping and thin routers."""
