"""REST API tests against ``mediamirror serve`` on localhost (a real uvicorn server)."""
