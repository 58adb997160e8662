// DA3 for Blender: a Flamenco v3 job type ("da3-reconstruct") for one shot planned by `da3 farm plan`.
//
// Install: copy this file into the `scripts/` folder next to the Flamenco Manager executable and
// restart the manager. Define the manager variable `da3_python` (flamenco-manager.yaml, `variables:`,
// one value per platform): the workers' Python with torch and the DA3 requirements. Submit with the
// panel's "Submit to Flamenco", `blender -b -P scripts/reconstruct.py -- shot.mp4 -o shot.blend
// --submit-flamenco URL`, or `da3 farm submit DIR --flamenco URL`.
//
// Tasks: one `da3-gpu` task per chunk (`da3_farm.py forward DIR --chunk K`; any order, in parallel),
// then `align` (type `da3-align`: stitches the chunks in order: result.npz and the exports), `loops`
// (type `da3-gpu`: a long shot that comes back to a place gets its loops closed, as in-process
// streaming; the loop chunks run through the network; else nothing), `solve`
// (type `da3-align`: the camera solve of the whole stitched shot when the plan refines cameras, as
// in-process --refine; pycolmap on the worker; else nothing) and `build` (type `da3-build`: the
// .blend, headless Blender). Give GPU workers the task type `da3-gpu` in their flamenco-worker.yaml
// (`task_types`); `da3-align` and `da3-build` need no GPU.

const JOB_TYPE = {
    label: "DA3 Reconstruct",
    description: "Depth Anything 3: a video or photos into a 3D scene, chunks spread over workers",
    settings: [
        { key: "input", type: "string", required: true, editable: false,
          description: "The shot: a video, a folder of images or an image (as planned)" },
        { key: "output", type: "string", subtype: "file_path", required: true,
          description: "The .blend the build task writes" },
        { key: "model", type: "string", required: true, editable: false,
          description: "DA3 model: a Hugging Face repo id or a model folder the workers see" },
        { key: "chunks", type: "int32", required: true, editable: false,
          description: "Number of chunks in the plan (one forward task each)" },
        { key: "device", type: "string", default: "auto",
          description: "Where a chunk runs: auto, cpu, cuda, cuda:N or mps" },
        { key: "python", type: "string", default: "{da3_python}", visible: false,
          description: "The workers' Python with torch (a manager variable)" },
        { key: "blender", type: "string", default: "{blender}", visible: false,
          description: "Blender on the workers, for the build task" },
        { key: "plan_dir", type: "string", subtype: "dir_path", required: true, editable: false,
          description: "The shot's plan folder (da3 farm plan ... --out DIR), on shared storage" },
        { key: "da3_root", type: "string", subtype: "dir_path", required: true, visible: false,
          description: "The DA3 for Blender folder (holding scripts/da3_farm.py)" },
    ],
};

function compileJob(job) {
    const settings = job.settings;
    if (!(settings.chunks >= 1)) {
        throw `chunks must be 1 or more, got ${settings.chunks}: plan the shot with da3 farm plan`;
    }
    const farm = path.join(settings.da3_root, "scripts", "da3_farm.py");

    const forwardTasks = [];
    for (let k = 0; k < settings.chunks; k++) {
        const task = author.Task(`forward-${k}`, "da3-gpu");
        task.addCommand(author.Command("exec", {
            exe: settings.python,
            args: [farm, "forward", settings.plan_dir, "--chunk", String(k), "--device", settings.device],
        }));
        forwardTasks.push(task);
    }

    const alignTask = author.Task("align", "da3-align");
    alignTask.addCommand(author.Command("exec", {
        exe: settings.python,
        args: [farm, "align", settings.plan_dir],
    }));
    for (const task of forwardTasks) {
        alignTask.addDependency(task);
    }

    const loopsTask = author.Task("loops", "da3-gpu");
    loopsTask.addCommand(author.Command("exec", {
        exe: settings.python,
        args: [farm, "loops", settings.plan_dir, "--device", settings.device],
    }));
    loopsTask.addDependency(alignTask);

    const solveTask = author.Task("solve", "da3-align");
    solveTask.addCommand(author.Command("exec", {
        exe: settings.python,
        args: [farm, "solve", settings.plan_dir],
    }));
    solveTask.addDependency(loopsTask);

    const buildTask = author.Task("build", "da3-build");
    buildTask.addCommand(author.Command("exec", {
        exe: settings.python,
        args: [farm, "build", settings.plan_dir, "--output", settings.output, "--blender", settings.blender],
    }));
    buildTask.addDependency(solveTask);

    for (const task of forwardTasks) {
        job.addTask(task);
    }
    job.addTask(alignTask);
    job.addTask(loopsTask);
    job.addTask(solveTask);
    job.addTask(buildTask);
}
