// A frame viewer for image sequences: step, scrub and play at the dataset's frame rate.

import { api } from "../api.js";
import { h, icon } from "../dom.js";

export async function mountFrames(container, framesUrl, { signal, fallbackFps }) {
  const data = await api(framesUrl, { signal });
  const frames = data.frames || [];
  if (!frames.length) {
    container.append(h("div", { class: "viewer-placeholder" }, icon("frames", "icon icon-lg"), h("p", null, "This sequence has no frames in the bucket.")));
    return { destroy() {} };
  }
  const fps = [data.fps, fallbackFps].find((v) => Number(v) > 0) || 10;
  let index = 0;
  let timer = null;

  const img = h("img", { class: "frame-img", alt: "", decoding: "async", draggable: "false" });
  const failure = h("div", { class: "viewer-error", hidden: true });
  img.addEventListener("error", () => {
    failure.replaceChildren(icon("alert"), h("span", null, `Frame ${frames[index].name} could not be loaded.`));
    failure.hidden = false;
  });
  img.addEventListener("load", () => {
    failure.hidden = true;
  });
  const stage = h("div", { class: "frame-stage", tabindex: "0", "data-testid": "frames", "aria-label": "Image sequence; arrow keys step, space plays" }, img, failure);

  const prev = h("button", { type: "button", class: "tool-btn", "aria-label": "Previous frame", title: "Previous frame (←)", "data-tool": "prev" }, icon("prev"));
  const next = h("button", { type: "button", class: "tool-btn", "aria-label": "Next frame", title: "Next frame (→)", "data-tool": "next" }, icon("next"));
  const play = h("button", { type: "button", class: "tool-btn tool-btn-primary", "aria-label": "Play", title: `Play at ${fps} fps (space)`, "data-tool": "play" }, icon("play"));
  const slider = h("input", { type: "range", class: "frame-slider", min: 1, max: frames.length, step: 1, value: 1, "aria-label": "Frame" });
  const counterEl = h("span", { class: "frame-counter" });
  const nameEl = h("span", { class: "frame-name" });

  const show = (i) => {
    index = (i + frames.length) % frames.length;
    img.src = frames[index].url;
    img.alt = frames[index].name;
    slider.value = String(index + 1);
    counterEl.textContent = `${index + 1} / ${frames.length}`;
    nameEl.textContent = frames[index].name;
    nameEl.title = frames[index].name;
    stage.dataset.frame = String(index);
    for (const ahead of [1, 2]) {
      const upcoming = frames[(index + ahead) % frames.length];
      if (upcoming) new Image().src = upcoming.url;
    }
  };
  const stop = () => {
    if (timer) clearInterval(timer);
    timer = null;
    play.replaceChildren(icon("play"));
    play.setAttribute("aria-label", "Play");
    stage.dataset.playing = "false";
  };
  const start = () => {
    if (timer) return;
    timer = setInterval(() => show(index + 1), 1000 / fps);
    play.replaceChildren(icon("pause"));
    play.setAttribute("aria-label", "Pause");
    stage.dataset.playing = "true";
  };

  prev.addEventListener("click", () => {
    stop();
    show(index - 1);
  });
  next.addEventListener("click", () => {
    stop();
    show(index + 1);
  });
  play.addEventListener("click", () => (timer ? stop() : start()));
  slider.addEventListener("input", () => {
    stop();
    show(Number(slider.value) - 1);
  });
  stage.addEventListener("keydown", (event) => {
    if (event.key === "ArrowLeft") prev.click();
    else if (event.key === "ArrowRight") next.click();
    else if (event.key === " ") play.click();
    else return;
    event.preventDefault();
  });

  container.append(
    h(
      "div",
      { class: "frames" },
      stage,
      h(
        "div",
        { class: "frame-controls" },
        prev,
        play,
        next,
        slider,
        counterEl,
        h("span", { class: "frame-meta" }, nameEl, h("span", { class: "frame-fps" }, `${fps} fps`)),
      ),
    ),
  );
  show(0);
  signal.addEventListener("abort", stop);
  return { destroy: stop };
}
