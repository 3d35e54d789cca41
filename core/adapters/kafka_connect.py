"""Kafka Connect's REST API: register, inspect and remove connectors."""

from __future__ import annotations

from typing import Any

import httpx

from core.ports import DependencyUnavailable


class ConnectError(RuntimeError):
    """Kafka Connect refused the request; the message carries its answer."""


class KafkaConnectClient:
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.url, timeout=timeout_s)

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise DependencyUnavailable(f"Kafka Connect at {self.url} did not answer: {error!r}") from error
        if response.status_code >= 500:
            raise DependencyUnavailable(
                f"Kafka Connect at {self.url}: {response.status_code} {response.text[:500]}")
        return response

    async def put(self, name: str, config: dict[str, str]) -> None:
        """Create the connector, or update its config (idempotent)."""
        response = await self._call("PUT", f"/connectors/{name}/config", json=config)
        if response.status_code not in (200, 201):
            raise ConnectError(f"connector {name}: {response.status_code} {_message(response)}")

    async def status(self, name: str) -> dict[str, Any] | None:
        response = await self._call("GET", f"/connectors/{name}/status")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ConnectError(f"connector {name}: {response.status_code} {_message(response)}")
        data: dict[str, Any] = response.json()
        return data

    async def delete(self, name: str) -> bool:
        response = await self._call("DELETE", f"/connectors/{name}")
        if response.status_code == 404:
            return False
        if response.status_code not in (200, 204):
            raise ConnectError(f"connector {name}: {response.status_code} {_message(response)}")
        return True


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.text))[:1000]
    except ValueError:
        return response.text[:1000]
