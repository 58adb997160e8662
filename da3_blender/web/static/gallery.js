// The DA3 gallery: a list of result folders (index.json), the selected one's scene.glb in a three.js
// viewer (vendored, loaded only if present) and its depth pictures. #viewer gets data-loaded=URL and
// data-points=N once a glb is shown (the browser tests wait for it).
"use strict";
const viewerEl = document.getElementById("viewer");
const note = document.getElementById("note");
let viewer = null;

async function makeViewer() {
  const THREE = await import("three");
  const { GLTFLoader } = await import("three/addons/loaders/GLTFLoader.js");
  const { OrbitControls } = await import("three/addons/controls/OrbitControls.js");
  const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(window.devicePixelRatio);
  viewerEl.appendChild(renderer.domElement);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0x1d1f24);
  const camera = new THREE.PerspectiveCamera(50, 1, 0.001, 1e5);
  const controls = new OrbitControls(camera, renderer.domElement);
  let current = null;
  function resize() {
    const w = viewerEl.clientWidth, h = viewerEl.clientHeight;
    renderer.setSize(w, h); camera.aspect = w / Math.max(h, 1); camera.updateProjectionMatrix();
  }
  new ResizeObserver(resize).observe(viewerEl); resize();
  renderer.setAnimationLoop(() => { controls.update(); renderer.render(scene, camera); });
  const loader = new GLTFLoader();
  return {
    show(url) {
      return new Promise((resolve, reject) => loader.load(url, (gltf) => {
        if (current) scene.remove(current);
        current = gltf.scene; scene.add(current);
        let points = 0;
        current.traverse((o) => {
          if (o.isPoints) { o.material.size = 2; o.material.sizeAttenuation = false; points += o.geometry.attributes.position.count; }
        });
        const box = new THREE.Box3().setFromObject(current);
        const centre = box.getCenter(new THREE.Vector3()), size = box.getSize(new THREE.Vector3()).length() || 1;
        camera.position.copy(centre).add(new THREE.Vector3(0, -size * 0.15, -size * 0.9));
        camera.up.set(0, -1, 0); camera.near = size / 1000; camera.far = size * 100; camera.updateProjectionMatrix();
        controls.target.copy(centre); controls.update();
        viewerEl.dataset.loaded = url; viewerEl.dataset.points = String(points);
        resolve(points);
      }, undefined, reject));
    },
  };
}

async function select(item, el) {
  document.querySelectorAll(".item").forEach((e) => e.classList.toggle("sel", e === el));
  const depths = document.getElementById("depths"); depths.replaceChildren();
  for (const src of item.depth_images) { const img = document.createElement("img"); img.src = src; img.alt = src; depths.appendChild(img); }
  const files = document.getElementById("files"); files.replaceChildren();
  for (const f of item.files) { const a = document.createElement("a"); a.href = f; a.textContent = f.split("/").pop(); a.download = ""; files.appendChild(a); }
  note.textContent = "";
  if (!item.model) { note.textContent = "no scene.glb in this result"; return; }
  try {
    viewer = viewer || await makeViewer();
    note.textContent = "loading " + item.model + " …";
    const n = await viewer.show(item.model);
    note.textContent = `${item.title}: ${n} points`;
  } catch (e) {
    note.textContent = "3D viewer unavailable (" + e + "); run: python scripts/vendor_three.py";
  }
}

async function main() {
  const items = document.getElementById("items");
  const index = await (await fetch("index.json")).json();
  items.replaceChildren();
  if (!index.items.length) { items.textContent = "no result folders yet (folders with scene.glb or depth_vis/)"; return; }
  let first = null;
  for (const item of index.items) {
    const el = document.createElement("div"); el.className = "item"; el.textContent = item.title;
    if (item.thumbnail) { const img = document.createElement("img"); img.src = item.thumbnail; img.alt = ""; el.appendChild(img); }
    el.onclick = () => select(item, el);
    items.appendChild(el);
    first = first || [item, el];
  }
  select(...first);
}
main().catch((e) => { document.getElementById("items").textContent = "could not load the gallery: " + e; });
