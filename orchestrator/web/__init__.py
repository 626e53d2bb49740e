"""The web interface and the REST API: thin, over the services."""
