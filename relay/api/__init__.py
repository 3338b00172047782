"""The relay API: FastAPI app, operator tokens, permissions and the live event stream."""
