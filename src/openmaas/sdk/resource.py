"""How a resource method is written once for `Client` and `AsyncClient`.

A resource (`client.deployments`, `client.admin.organizations`, …) is a `Resource[SyncSender]` in
a `Client` and a `Resource[AsyncSender]` in an `AsyncClient`. Its methods are decorated with
`@endpoint`: the method only says what to do (returns a `Call`, a `Download` or a `Plan`), and the
resource's sender does it. So, to users and to type checkers alike,

    client.deployments.get("churn")         # -> DeploymentPublic
    async_client.deployments.get("churn")   # -> Coroutine[..., DeploymentPublic], to be awaited

with the method's own signature. `@event_stream` does the same for the one streaming method
(`Iterator` vs `AsyncIterator` of job events).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from openmaas.schemas.jobs import JobEventPublic
from openmaas.sdk.calls import Steps
from openmaas.sdk.events import EventStream
from openmaas.sdk.senders import AsyncSender, SyncSender

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound=SyncSender | AsyncSender)


class Resource(Generic[S]):
    """A group of API methods, bound to the sender that performs them."""

    def __init__(self, sender: S) -> None:
        self._sender = sender


def _bind(method: Callable[..., Any], resource: Resource[Any], perform: Callable[[Any], Any]) -> Any:
    bound = method.__get__(resource)

    def call(*args: Any, **kwargs: Any) -> Any:
        return perform(bound(*args, **kwargs))

    return functools.update_wrapper(call, bound)


class endpoint(Generic[P, T]):
    """A method that describes its request(s); `Client` returns `T`, `AsyncClient` a coroutine."""

    def __init__(self, method: Callable[Concatenate[Any, P], Steps[T]]) -> None:
        self._method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, resource: None, owner: type) -> Self: ...
    @overload
    def __get__(self, resource: Resource[SyncSender], owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(
        self, resource: Resource[AsyncSender], owner: type
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, resource: Resource[Any] | None, owner: type) -> Any:
        if resource is None:
            return self
        return _bind(self._method, resource, resource._sender.perform)


class event_stream(Generic[P]):
    """A method that names an event stream; `Client` iterates it, `AsyncClient` async-iterates it."""

    def __init__(self, method: Callable[Concatenate[Any, P], EventStream]) -> None:
        self._method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, resource: None, owner: type) -> Self: ...
    @overload
    def __get__(
        self, resource: Resource[SyncSender], owner: type
    ) -> Callable[P, Iterator[JobEventPublic]]: ...
    @overload
    def __get__(
        self, resource: Resource[AsyncSender], owner: type
    ) -> Callable[P, AsyncIterator[JobEventPublic]]: ...
    def __get__(self, resource: Resource[Any] | None, owner: type) -> Any:
        if resource is None:
            return self
        return _bind(self._method, resource, resource._sender.stream)
