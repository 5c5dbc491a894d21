/* Search for the site opened from disk (file://), written for asyncmail.
 *
 * Browsers refuse to start a Web Worker from a file:// page, and the theme's
 * search runs in one. This stands in for `Worker` on file:// pages only: the
 * worker's script runs in a hidden same-origin frame, and messages cross
 * between the page and the frame as they would to and from a worker. Its
 * file name keeps the theme's offline plugin from adding a copy loaded from
 * a CDN. On http(s) pages it does nothing.
 */
(function () {
  "use strict";
  if (location.protocol !== "file:") {
    return;
  }

  function deliver(target, data) {
    var copy = typeof structuredClone === "function" ? structuredClone(data) : data;
    setTimeout(function () {
      target.dispatchEvent(new MessageEvent("message", { data: copy }));
    }, 0);
  }

  function FrameWorker(url) {
    var events = document.createElement("span");
    var worker = this;
    var frame = document.createElement("iframe");
    frame.hidden = true;
    frame.setAttribute("aria-hidden", "true");
    document.documentElement.appendChild(frame);
    var scope = frame.contentWindow;
    var pending = [];
    var ready = false;

    this.onmessage = null;
    this.onerror = null;
    this.addEventListener = events.addEventListener.bind(events);
    this.removeEventListener = events.removeEventListener.bind(events);
    this.dispatchEvent = function (event) {
      if (event.type === "message" && typeof worker.onmessage === "function") {
        worker.onmessage(event);
      }
      return events.dispatchEvent(event);
    };

    // Inside the frame, postMessage() answers the page, as in a worker.
    scope.postMessage = function (data) {
      deliver(worker, data);
    };
    scope.importScripts = function () {
      throw new Error("importScripts() is not available to a worker from file://");
    };

    this.postMessage = function (data) {
      if (ready) {
        deliver(scope, data);
      } else {
        pending.push(data);
      }
    };
    this.terminate = function () {
      frame.remove();
    };

    var script = scope.document.createElement("script");
    script.src = new URL(url, location.href).href;
    script.onload = function () {
      ready = true;
      pending.splice(0).forEach(function (data) {
        deliver(scope, data);
      });
    };
    script.onerror = function () {
      var event = new Event("error");
      if (typeof worker.onerror === "function") {
        worker.onerror(event);
      }
      events.dispatchEvent(event);
    };
    scope.document.head.appendChild(script);
  }

  window.Worker = FrameWorker;
})();
