"""The OpenAI-compatible router: least-loaded routing, holding requests at zero, the arrivals signal. See README.md here."""
