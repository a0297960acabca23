"""One module per worker; each handler reads like the rule it enforces."""
