from fastapi import APIRouter

from api.deps import DbDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(pool: DbDep) -> dict:
    async with pool.connection() as conn:
        await conn.execute("SELECT 1")
    return {"status": "ok"}
