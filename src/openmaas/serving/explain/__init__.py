"""Feature attributions for deployed trained models (`POST /v1/deployments/{name}/explain`).

`attribution` maps raw attribution tensors back to what a user sent (feature names, tokens, pixel
heatmaps); `options` checks the request's explain-only fields; `explainer` runs Captum's
integrated gradients on its own model copy behind its own small queue, so explanations never
share, block or slow the deployment's prediction batcher.
"""
