"""The bundled market scenario: price paths, oracle observations and a book of accounts."""
