// Deep zoom over the IIIF Image API 3.0 service, with the vendored OpenSeadragon.

import { api } from "../api.js";
import { h, icon } from "../dom.js";

const SCRIPT = "/static/vendor/openseadragon/openseadragon.min.js";
let loader = null;

function loadOpenSeadragon() {
  if (window.OpenSeadragon) return Promise.resolve(window.OpenSeadragon);
  if (!loader) {
    loader = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = SCRIPT;
      script.async = true;
      script.onload = () => resolve(window.OpenSeadragon);
      script.onerror = () => {
        loader = null;
        script.remove();
        reject(new Error("The deep-zoom viewer could not be loaded."));
      };
      document.head.append(script);
    });
  }
  return loader;
}

let counter = 0;

export async function mountDeepZoom(container, infoUrl, { signal }) {
  counter += 1;
  const stage = h("div", { class: "osd-stage", id: `osd-${counter}`, "data-testid": "deepzoom", tabindex: "0" });
  const zoomLabel = h("span", { class: "zoom-label", "aria-live": "polite" }, "…");
  const failure = h("div", { class: "viewer-error", hidden: true });
  const button = (name, label) =>
    h("button", { type: "button", class: "tool-btn", title: label, "aria-label": label, "data-tool": name }, icon(name));
  const zoomIn = button("zoomIn", "Zoom in");
  const zoomOut = button("zoomOut", "Zoom out");
  const fit = button("fit", "Fit to view");
  const full = button("fullscreen", "Full screen");
  const toolbar = h("div", { class: "viewer-toolbar", role: "toolbar", "aria-label": "Deep zoom" }, zoomIn, zoomOut, fit, h("span", { class: "tool-sep" }), zoomLabel, full);
  container.append(h("div", { class: "deepzoom" }, stage, toolbar, failure));

  const [OpenSeadragon, info] = await Promise.all([loadOpenSeadragon(), api(infoUrl, { signal })]);
  if (signal.aborted) return { destroy() {} };

  const viewer = OpenSeadragon({
    element: stage,
    tileSources: info,
    showNavigationControl: false,
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    navigatorAutoFade: false,
    navigatorBackground: "#0c0e14",
    navigatorBorderColor: "rgba(255, 255, 255, 0.25)",
    navigatorDisplayRegionColor: "#8b85ff",
    visibilityRatio: 0.5,
    minZoomImageRatio: 0.5,
    maxZoomPixelRatio: 4,
    animationTime: 0.5,
    blendTime: 0.1,
    gestureSettingsMouse: { clickToZoom: true, dblClickToZoom: true },
    zoomPerClick: 2,
    zoomPerScroll: 1.4,
  });

  let loaded = 0;
  let failed = 0;
  const update = () => {
    const zoom = viewer.viewport.getZoom(true);
    const imageZoom = viewer.viewport.viewportToImageZoom(zoom);
    stage.dataset.zoom = zoom.toFixed(4);
    zoomLabel.textContent = `${imageZoom >= 0.1 ? Math.round(imageZoom * 100) : (imageZoom * 100).toFixed(1)}%`;
  };
  viewer.addHandler("open", () => {
    stage.dataset.ready = "true";
    update();
  });
  viewer.addHandler("zoom", update);
  viewer.addHandler("animation-finish", update);
  viewer.addHandler("tile-loaded", () => {
    loaded += 1;
    stage.dataset.tilesLoaded = String(loaded);
  });
  viewer.addHandler("tile-load-failed", () => {
    failed += 1;
    stage.dataset.tilesFailed = String(failed);
    failure.replaceChildren(icon("alert"), h("span", null, `${failed} tile(s) could not be loaded.`));
    failure.hidden = false;
  });
  viewer.addHandler("open-failed", (event) => {
    failure.replaceChildren(icon("alert"), h("span", null, `The image could not be opened: ${event.message || "unknown error"}`));
    failure.hidden = false;
  });

  zoomIn.addEventListener("click", () => viewer.viewport.zoomBy(2).applyConstraints());
  zoomOut.addEventListener("click", () => viewer.viewport.zoomBy(0.5).applyConstraints());
  fit.addEventListener("click", () => viewer.viewport.goHome());
  full.addEventListener("click", () => viewer.setFullScreen(!viewer.isFullPage()));

  return {
    viewer,
    destroy() {
      viewer.destroy();
    },
  };
}
