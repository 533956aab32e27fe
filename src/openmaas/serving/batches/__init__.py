"""OpenAI's batches (`/v1/batches`): a file of requests run at a lower priority than live traffic,
in the API server's process, beside the deployments that answer them."""
