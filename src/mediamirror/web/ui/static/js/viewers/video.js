// HTML5 video: the server answers range requests, so the browser seeks without downloading.

import { h, icon } from "../dom.js";

const MEDIA_ERRORS = {
  1: "Loading was aborted.",
  2: "A network error stopped the download.",
  3: "The video could not be decoded.",
  4: "This browser cannot play this video's format.",
};

export function mountVideo(container, { src, poster }) {
  const video = h("video", {
    class: "video",
    controls: true,
    preload: "metadata",
    playsinline: true,
    src,
    poster,
    "data-testid": "video",
  });
  const failure = h("div", { class: "viewer-error", hidden: true });
  video.addEventListener("error", () => {
    const code = video.error ? video.error.code : 0;
    failure.replaceChildren(icon("alert"), h("span", null, MEDIA_ERRORS[code] || "The video could not be played."));
    failure.hidden = false;
  });
  container.append(h("div", { class: "video-frame" }, video, failure));
  return {
    destroy() {
      video.pause();
      video.removeAttribute("src");
      video.load();
    },
  };
}
