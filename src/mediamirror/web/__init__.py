"""The service: REST API, push endpoints, IIIF tiles and the web UI."""
