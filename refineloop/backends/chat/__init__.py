"""Chat (vision-language) models: Ollama, OpenAI-compatible servers, and how every call to one is made."""
