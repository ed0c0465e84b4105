"""LLM resilience: circuit breakers, retries, deadlines, hedging, the router chat model and
degradation wrappers.  No web or database imports here."""
