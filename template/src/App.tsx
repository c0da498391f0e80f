export default function App() {
  return (
    <main className="min-h-screen flex items-center justify-center bg-slate-50 text-slate-900">
      <div className="text-center space-y-3">
        <h1 className="text-4xl font-bold tracking-tight">Your app starts here</h1>
        <p className="text-slate-500">Describe what you want to build and Kiln will write it.</p>
      </div>
    </main>
  );
}
