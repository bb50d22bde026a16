"""Developer tooling for this project (not shipped with the application)."""
