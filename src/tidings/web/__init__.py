"""What the HTTP API and the portal share, so neither imports the other: the error shape
and its handlers, request-size and strict-JSON limits, and the signed portal sessions and
consumer links (issued by the API, honoured by the portal). ``tidings.app`` wires the
layers together."""
